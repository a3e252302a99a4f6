"""Carries out a `StreamPlan` on a list of blocks: resident blocks live on the GPU for good; streamed
blocks live in pinned host memory and are copied into GPU slot buffers on a side CUDA stream, ahead of
use, in the order `PrefetchSchedule` gives. Events order the copies against compute:
the compute stream waits for a block's copy; a copy into a slot waits until the slot's last block ran.

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.vram_plan import PrefetchSchedule, StreamPlan

log = logging.getLogger(__name__)

_ALIGN = 256  # bytes; keeps every tensor view aligned for vectorised kernels and fp8 matmuls


@dataclass(frozen=True, slots=True)
class _Placed:
    """Where one parameter or buffer of a block sits inside the block's packed byte buffer."""

    module: torch.nn.Module
    name: str
    is_param: bool
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: torch.Size


def _layout(block: torch.nn.Module) -> tuple[list[_Placed], int]:
    placed: list[_Placed] = []
    offset = 0
    for module in block.modules():
        tensors: list[tuple[str, torch.Tensor, bool]] = [
            (n, t, True) for n, t in module.named_parameters(recurse=False)
        ]
        tensors += [(n, t, False) for n, t in module.named_buffers(recurse=False) if t is not None]
        for name, tensor, is_param in tensors:
            nbytes = tensor.numel() * tensor.element_size()
            placed.append(_Placed(module, name, is_param, offset, nbytes, tensor.dtype, tensor.shape))
            offset += -(-nbytes // _ALIGN) * _ALIGN
    return placed, offset


def _current(p: _Placed) -> torch.Tensor:
    tensor = p.module._parameters[p.name] if p.is_param else p.module._buffers[p.name]
    assert tensor is not None
    return tensor


def _point(placed: Sequence[_Placed], buffer: torch.Tensor) -> None:
    """Make every tensor of a block a view into `buffer` (host or GPU) without new allocations."""
    for p in placed:
        view = buffer[p.offset : p.offset + p.nbytes].view(p.dtype).view(p.shape)
        if p.is_param:
            param = p.module._parameters[p.name]
            assert param is not None
            param.data = view
        else:
            p.module._buffers[p.name] = view


class StreamedBlocks:
    """Blocks run in a fixed order, some resident on the GPU, the rest streamed per `apply(plan)`."""

    def __init__(self, blocks: Sequence[torch.nn.Module], device: torch.device, name: str, wrap: bool = True):
        self.name = name
        self._blocks = list(blocks)
        self._device = device
        self._wrap = wrap  # prefetch the next pass's first blocks at the end of a pass
        layouts = [_layout(b) for b in self._blocks]
        self._placed = [p for p, _ in layouts]
        self.block_bytes: tuple[int, ...] = tuple(size for _, size in layouts)
        self._gpu: list[torch.Tensor | None] = [None] * len(self._blocks)
        self._host: list[torch.Tensor | None] = [None] * len(self._blocks)
        self._streamed: set[int] = set()
        self._arena: torch.Tensor | None = None
        self._arena_registered = False
        self._slots: list[torch.Tensor] = []
        self._slot_bytes = 0
        self._schedule = PrefetchSchedule((), 0)
        self._copy_stream = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        self._ready: list[torch.cuda.Event] = []
        self._free: list[torch.cuda.Event] = []
        self._running_slot: dict[int, int] = {}
        self.copied_bytes = 0  # host -> GPU bytes since start, for the benchmark
        for index, block in enumerate(self._blocks):
            block.register_forward_pre_hook(self._make_pre_hook(index))
            block.register_forward_hook(self._make_post_hook(index))

    # -- placement ---------------------------------------------------------------------------
    def apply(self, plan: StreamPlan) -> None:
        """Move blocks to match `plan` (only those whose placement changes) and size the slots."""
        if len(plan.block_bytes) != len(self._blocks):
            raise ValueError(
                f"{self.name}: plan for {len(plan.block_bytes)} blocks, have {len(self._blocks)}"
            )
        torch.cuda.synchronize(self._device)
        self._slots = []
        # Streamed blocks first, so GPU memory of newly streamed blocks is freed before uploads.
        self._pack_streamed(sorted(plan.streamed))
        for index in sorted(plan.resident):
            self._make_resident(index)
        self._streamed = set(plan.streamed)
        self._slot_bytes = plan.slot_bytes
        self._schedule = PrefetchSchedule(plan.streamed, plan.slots, wrap=self._wrap)
        self._ready = [torch.cuda.Event() for _ in range(plan.slots)]  # type: ignore[no-untyped-call]
        self._free = [torch.cuda.Event() for _ in range(plan.slots)]  # type: ignore[no-untyped-call]
        self.allocate_slots()

    def allocate_slots(self) -> None:
        """(Re)create the slot buffers; a no-op when they exist or nothing is streamed."""
        if self._slots or not self._streamed:
            return
        n = self._schedule.slots
        self._slots = [
            torch.empty(self._slot_bytes, dtype=torch.uint8, device=self._device) for _ in range(n)
        ]
        self._schedule.reset()

    def release_slots(self) -> None:
        """Free the slot buffers (T5 between prompts) once pending copies are done."""
        if not self._slots:
            return
        self._copy_stream.synchronize()
        torch.cuda.current_stream(self._device).synchronize()
        self._slots = []
        self._schedule.reset()

    def recover(self) -> None:
        """After an error mid-pass: wait for the GPU, put streamed blocks back on the host, resync."""
        torch.cuda.synchronize(self._device)
        for index in self._streamed:
            host = self._host[index]
            if host is not None:
                _point(self._placed[index], host)
        self._running_slot.clear()
        self._schedule.reset()

    def _make_resident(self, index: int) -> None:
        if self._gpu[index] is not None:
            return
        source = self._host[index]
        if source is not None:
            gpu = source.to(self._device, non_blocking=False)
        else:
            placed = self._placed[index]
            gpu = torch.empty(self.block_bytes[index], dtype=torch.uint8, device=self._device)
            for p in placed:
                src = _current(p).detach().contiguous().reshape(-1).view(torch.uint8)
                gpu[p.offset : p.offset + p.nbytes].copy_(src)
        _point(self._placed[index], gpu)
        self._gpu[index] = gpu
        self._host[index] = None

    def _pack_streamed(self, streamed: Sequence[int]) -> None:
        """Put the streamed blocks into one page-locked host arena (a single registration: the
        pinned allocator would round every block up to a power of two)."""
        offsets: dict[int, int] = {}
        total = 0
        for index in streamed:
            offsets[index] = total
            total += self.block_bytes[index]
        arena = torch.empty(total, dtype=torch.uint8) if total else None
        registered = arena is not None and _register(arena)
        if arena is not None and not registered:
            arena = arena.pin_memory()
        for index in streamed:
            assert arena is not None
            host = arena[offsets[index] : offsets[index] + self.block_bytes[index]]
            old = self._host[index]
            if old is not None:
                host.copy_(old)
            else:
                for p in self._placed[index]:
                    src = _current(p).detach().contiguous().reshape(-1).view(torch.uint8)
                    host[p.offset : p.offset + p.nbytes].copy_(src)
            _point(self._placed[index], host)
            self._host[index] = host
            self._gpu[index] = None
        for index in range(len(self._blocks)):
            if index not in offsets:
                self._host[index] = None
        if self._arena is not None and self._arena_registered:
            _unregister(self._arena)
        self._arena, self._arena_registered = arena, registered

    @property
    def resident_bytes(self) -> int:
        return sum(self.block_bytes[i] for i, g in enumerate(self._gpu) if g is not None)

    # -- streaming ---------------------------------------------------------------------------
    def _issue(self, block: int, slot: int) -> None:
        host = self._host[block]
        assert host is not None, f"{self.name}: block {block} is not streamed"
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(self._free[slot])
            self._slots[slot][: host.numel()].copy_(host, non_blocking=True)
            self._ready[slot].record(self._copy_stream)
        self.copied_bytes += host.numel()

    def _make_pre_hook(self, index: int):  # type: ignore[no-untyped-def]
        def pre_hook(module: torch.nn.Module, args: object) -> None:
            if index not in self._streamed:
                return
            if not self._slots:
                self.allocate_slots()
            start = self._schedule.start(index)
            if start.resynced:
                log.debug("%s: prefetch cycle restarted at block %d", self.name, index)
            for copy in start.copies:
                self._issue(copy.block, copy.slot)
            torch.cuda.current_stream(self._device).wait_event(self._ready[start.slot])
            _point(self._placed[index], self._slots[start.slot])
            self._running_slot[index] = start.slot

        return pre_hook

    def _make_post_hook(self, index: int):  # type: ignore[no-untyped-def]
        def post_hook(module: torch.nn.Module, args: object, output: object) -> None:
            slot = self._running_slot.pop(index, None)
            if slot is None:
                return
            self._free[slot].record(torch.cuda.current_stream(self._device))
            host = self._host[index]
            assert host is not None
            _point(self._placed[index], host)

        return post_hook


def _register(buffer: torch.Tensor) -> bool:
    """Page-lock `buffer` in place so copies from it are asynchronous DMA."""
    cudart = torch.cuda.cudart()  # type: ignore[no-untyped-call]
    code = cudart.cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)
    ok = int(code) == 0
    if not ok:
        log.warning("cudaHostRegister failed (%s); using the pinned allocator instead", code)
    return ok


def _unregister(buffer: torch.Tensor) -> None:
    torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())  # type: ignore[no-untyped-call]


def move_outside_blocks(
    root: torch.nn.Module, blocks: Sequence[torch.nn.Module], device: torch.device
) -> int:
    """Move every parameter and buffer of `root` that is not inside `blocks` to `device`; returns bytes."""
    inside = {id(m) for b in blocks for m in b.modules()}
    moved = 0
    for module in root.modules():
        if id(module) in inside:
            continue
        for param in list(module._parameters.values()):
            if param is not None:
                param.data = param.data.to(device)
                moved += param.numel() * param.element_size()
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.to(device)
                moved += buf.numel() * buf.element_size()
    return moved
