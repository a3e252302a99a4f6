"""Reading a safetensors header (names, dtypes, shapes) without torch or the safetensors package."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# A header larger than this is not a safetensors file we wrote or downloaded (the format caps it at 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class HeaderError(ValueError):
    """The file is not a readable safetensors file."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    tensors: Mapping[str, TensorInfo]
    header_bytes: int  # the JSON header's length (the file starts with 8 bytes giving it)

    @property
    def expected_file_size(self) -> int:
        """Size of the complete file: a shorter one was cut off (an interrupted download)."""
        end = max((t.data_offsets[1] for t in self.tensors.values()), default=0)
        return 8 + self.header_bytes + end


def read_header(path: Path) -> SafetensorsHeader:
    """Parse the header of ``path``; raises HeaderError if it is not a safetensors file."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise HeaderError(f"{path} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", prefix)
        if length == 0 or length > _MAX_HEADER_BYTES:
            raise HeaderError(f"{path} does not start with a safetensors header.")
        raw = f.read(length)
    if len(raw) != length:
        raise HeaderError(f"{path} ends inside its safetensors header.")
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeaderError(f"{path} has an unreadable safetensors header ({exc}).") from exc
    if not isinstance(parsed, dict):
        raise HeaderError(f"{path} has a safetensors header that is not a JSON object.")
    tensors: dict[str, TensorInfo] = {}
    for name, value in parsed.items():
        if name == "__metadata__":
            continue
        try:
            tensors[name] = TensorInfo(
                dtype=str(value["dtype"]),
                shape=tuple(int(d) for d in value["shape"]),
                data_offsets=(int(value["data_offsets"][0]), int(value["data_offsets"][1])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise HeaderError(f"{path}: tensor {name!r} has a malformed header entry.") from exc
    return SafetensorsHeader(tensors=tensors, header_bytes=length)


def name_shape_hash(shapes: Mapping[str, Iterable[int]]) -> str:
    """DiffSynth's model hash: MD5 of the sorted "name:d0_d1" and "name" strings joined by commas.

    Mirrors ``diffsynth.core.loader.file.hash_model_file`` (with_shape=True) for flat state dicts,
    so a file can be recognised without torch. Shards are hashed as one merged dict.
    """
    keys: list[str] = []
    for name, shape in shapes.items():
        keys.append(name + ":" + "_".join(str(d) for d in shape))
        keys.append(name)
    keys.sort()
    return hashlib.md5(",".join(keys).encode("utf-8")).hexdigest()


def files_hash(headers: Iterable[SafetensorsHeader]) -> str:
    """The DiffSynth hash of one checkpoint stored in one or more shards."""
    merged: dict[str, tuple[int, ...]] = {}
    for header in headers:
        merged.update({name: info.shape for name, info in header.tensors.items()})
    return name_shape_hash(merged)
