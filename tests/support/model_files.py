"""Sparse model files with the real names and shapes (header-only safetensors: no disk blocks used).

`write_set(model_dir)` writes a model set that `models.check` recognises; the fake modelscope of the
download tests writes the same files.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

from models.registry import model_paths

SHAPES_FILE = Path(__file__).resolve().parent.parent / "data" / "flux_model_shapes.json.gz"
BYTES_PER_ELEMENT = {"F8_E4M3": 1, "BF16": 2}


def model_shapes() -> dict[str, dict[str, list[int]]]:
    with gzip.open(SHAPES_FILE, "rt") as f:
        data: dict[str, dict[str, list[int]]] = json.load(f)
    return data


def write_sparse(path: Path, shapes: dict[str, list[int]], dtype: str = "BF16", cut: int = 0) -> None:
    """A safetensors file with the real header whose data is a hole: no disk used."""
    header: dict[str, object] = {}
    offset = 0
    for name in sorted(shapes):
        n = math.prod(shapes[name]) * BYTES_PER_ELEMENT[dtype]
        header[name] = {"dtype": dtype, "shape": shapes[name], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset - cut)


def write_set(model_dir: Path, skip: frozenset[str] = frozenset()) -> None:
    all_shapes = model_shapes()
    paths = model_paths(model_dir)
    if "dit" not in skip:
        write_sparse(paths.dit, all_shapes["dit"], "F8_E4M3")
    if "text_encoder_clip" not in skip:
        write_sparse(paths.text_encoder_clip, all_shapes["text_encoder_clip"])
    if "text_encoder_t5" not in skip:
        names = sorted(all_shapes["text_encoder_t5"])
        half = len(names) // 2
        for shard, part in zip(paths.text_encoder_t5, (names[:half], names[half:]), strict=True):
            write_sparse(shard, {k: all_shapes["text_encoder_t5"][k] for k in part})
    if "vae" not in skip:
        write_sparse(paths.vae, all_shapes["vae"])
    for folder in (paths.tokenizer_clip, paths.tokenizer_t5):
        if folder.name not in skip:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "tokenizer_config.json").write_text("{}")
