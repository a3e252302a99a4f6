"""Reading tensors out of safetensors checkpoints into memory the engine already placed.

Plain positioned reads (`os.preadv`), no memory map: a mapped checkpoint counts towards the process's
resident memory for as long as it stays mapped, and loading through a state dict holds a second copy of
every tensor until the model takes it. Here each tensor goes once from the file (usually the page cache)
to its final place: straight into a page-locked host buffer when the types match, or through a pinned
staging buffer and the GPU (which converts types far faster than the CPU) otherwise.

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.safetensors_header import read_header

# Positioned reads release the GIL; from the page cache they scale with threads, and large tensors are
# read in pieces so that a block of a few big tensors keeps every thread busy.
READ_THREADS = min(16, max(4, os.cpu_count() or 4))
READ_PIECE_BYTES = 16 << 20
_ALIGN = 256

_DTYPES: Mapping[str, torch.dtype] = {
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint lacks a tensor the model needs, or holds one of another shape."""


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """Where one tensor's bytes are: file, absolute offset, type and shape as stored."""

    path: Path
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def index_checkpoint(paths: Iterable[Path]) -> dict[str, StoredTensor]:
    """Every tensor of a (possibly sharded) checkpoint, by name, from the headers alone."""
    index: dict[str, StoredTensor] = {}
    for path in paths:
        header = read_header(path)
        start = 8 + header.header_bytes
        for name, info in header.tensors.items():
            dtype = _DTYPES.get(info.dtype)
            if dtype is None:
                raise CheckpointError(f"{path}: tensor {name!r} has the unsupported type {info.dtype}.")
            begin, end = info.data_offsets
            index[name] = StoredTensor(path, start + begin, end - begin, dtype, info.shape)
    return index


def model_to_file_names(
    file_names: Iterable[str], converter: Callable[[dict[str, str]], dict[str, str]] | None
) -> dict[str, str]:
    """{model tensor name: checkpoint tensor name} through a DiffSynth state-dict converter, which only
    renames (and aliases) entries for the checkpoints majicbot loads, so it can run on names alone."""
    names = {name: name for name in file_names}
    mapped = converter(names) if converter is not None else names
    return {str(k): str(v) for k, v in mapped.items()}


@dataclass(slots=True)
class ReadTiming:
    """Where the reading time went, for the load log."""

    staging_s: float = 0.0  # making staging buffers (page-locking them)
    reading_s: float = 0.0  # positioned reads, all threads together in wall time
    placing_s: float = 0.0  # staging -> GPU, type conversion, copies into place
    pieces: int = field(default=0)

    def describe(self, total_s: float) -> str:
        other = max(total_s - self.staging_s - self.reading_s - self.placing_s, 0.0)
        return (
            f"reads {self.reading_s:.1f} s in {self.pieces} pieces on {READ_THREADS} threads, "
            f"staging {self.staging_s:.1f} s, placing {self.placing_s:.1f} s, "
            f"destinations and the rest {other:.1f} s"
        )


class CheckpointReader:
    """Fills destination tensors from checkpoint files; counts bytes read for progress reports."""

    def __init__(
        self,
        device: torch.device,
        on_bytes: Callable[[int], None] | None = None,
        host_buffer: Callable[[int], torch.Tensor] = lambda n: torch.empty(n, dtype=torch.uint8),
        release: Callable[[torch.Tensor], None] = lambda buffer: None,
    ) -> None:
        """`host_buffer(nbytes)` makes the staging buffer for whole blocks (page-locked in the engine,
        so that a block crosses to the GPU in one asynchronous copy); `release` undoes it."""
        self._device = device
        self._on_bytes = on_bytes
        self._host_buffer = host_buffer
        self._release = release
        self._files: dict[Path, int] = {}
        self._block_staging: torch.Tensor | None = None
        self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="checkpoint-read")
        self.bytes_read = 0
        self.timing = ReadTiming()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown()
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self._drop_block_staging()

    def _drop_block_staging(self) -> None:
        if self._block_staging is not None:
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            self._release(self._block_staging)
            self._block_staging = None

    def read_block(
        self,
        pairs: Sequence[tuple[StoredTensor, torch.Tensor]],
        convert: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Fill many destinations at once (one block): reads run in parallel threads; a destination in
        host memory of the stored type is read into directly, the rest go through one staging buffer
        that crosses to the GPU in one copy, where types are converted and each tensor put in place.

        `convert(position in pairs, tensor as stored (on the GPU), destination)` returns what to copy
        into a destination whose type differs from the stored one; a plain cast by default."""
        for source, destination in pairs:
            self._fd(source.path)  # opened here, not by the reading threads
            if destination.numel() != _numel(source.shape):
                raise CheckpointError(
                    f"{source.path.name}: a tensor has shape {list(source.shape)}, the model expects "
                    f"{list(destination.shape)}."
                )
        direct = [
            (s, d) for s, d in pairs if d.device.type == "cpu" and d.dtype == s.dtype and d.is_contiguous()
        ]
        staged = [
            (i, s, d)
            for i, (s, d) in enumerate(pairs)
            if not (d.device.type == "cpu" and d.dtype == s.dtype and d.is_contiguous())
        ]
        offsets: list[int] = []
        total = 0
        for _, source, _ in staged:
            offsets.append(total)
            total += -(-source.nbytes // _ALIGN) * _ALIGN
        if staged and (self._block_staging is None or self._block_staging.numel() < total):
            began = time.perf_counter()
            self._drop_block_staging()
            self._block_staging = self._host_buffer(total)
            self.timing.staging_s += time.perf_counter() - began
        staging = self._block_staging
        targets = [(s, d.data_ptr()) for s, d in direct]
        if staging is not None:
            targets += [(s, staging.data_ptr() + off) for (_, s, _), off in zip(staged, offsets, strict=True)]
        pieces = [
            (source, address + start, start, min(READ_PIECE_BYTES, source.nbytes - start))
            for source, address in targets
            for start in range(0, source.nbytes, READ_PIECE_BYTES)
        ]
        began = time.perf_counter()
        list(self._pool.map(lambda piece: self._pread(*piece), pieces))
        self.timing.reading_s += time.perf_counter() - began
        self.timing.pieces += len(pieces)
        began = time.perf_counter()
        if staged:
            assert staging is not None
            on_gpu = staging[:total].to(self._device, non_blocking=True)
            for (position, source, destination), off in zip(staged, offsets, strict=True):
                tensor = on_gpu[off : off + source.nbytes].view(source.dtype).view(destination.shape)
                if convert is None or tensor.dtype == destination.dtype:
                    destination.copy_(tensor.to(destination.dtype))
                else:
                    destination.copy_(convert(position, tensor, destination))
            if self._device.type == "cuda":
                torch.cuda.current_stream(self._device).synchronize()  # the staging buffer is reused
        self.timing.placing_s += time.perf_counter() - began
        nbytes = sum(s.nbytes for s, _ in pairs)
        self.bytes_read += nbytes
        if self._on_bytes is not None:
            self._on_bytes(nbytes)

    def _fd(self, path: Path) -> int:
        fd = self._files.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            self._files[path] = fd
        return fd

    def _pread(self, source: StoredTensor, address: int, start: int, nbytes: int) -> None:
        """`nbytes` of `source` from byte `start` of its data to `address`."""
        fd = self._fd(source.path)
        view = memoryview((ctypes.c_char * nbytes).from_address(address)).cast("B")
        done = 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], source.offset + start + done)
            if n <= 0:
                raise CheckpointError(f"{source.path} ends inside tensor data (a cut-off download?).")
            done += n


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
