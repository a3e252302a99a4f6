"""Carries out a `StreamPlan` on a list of blocks: resident blocks live on the GPU for good; streamed
blocks live in page-locked host memory and are copied into GPU slot buffers on a side CUDA stream, ahead
of use, in the order `PrefetchSchedule` gives. Events order the copies against compute: the compute
stream waits for a block's copy; a copy into a slot waits until the slot's last block ran.

Each block's tensors are packed into one byte buffer (one copy per block). A tensor may be stored in a
narrower type than it computes in (T5's linear weights: float8 stored, bf16 computed): such tensors are
converted into a compute buffer on the GPU just before the block runs.

Blocks are placed once, at load, straight where the plan puts them (`load`), and moved one at a time
when the plan changes (`apply`), so host memory never holds a second copy of the weights.

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from engine.vram_plan import PrefetchSchedule, StreamPlan

log = logging.getLogger(__name__)

_ALIGN = 256  # bytes; keeps every tensor view aligned for vectorised kernels and fp8 matmuls

DtypeRule = Callable[[torch.nn.Module, str, torch.Tensor], tuple[torch.dtype, torch.dtype]]
"""(module, tensor name, tensor) -> (storage dtype, compute dtype) of that tensor."""


@dataclass(frozen=True, slots=True)
class PlacedTensor:
    """Where one parameter or buffer of a block sits inside the block's packed buffers."""

    module: torch.nn.Module
    name: str
    is_param: bool
    shape: torch.Size
    storage_dtype: torch.dtype
    compute_dtype: torch.dtype
    offset: int  # in the block's storage buffer
    nbytes: int
    compute_offset: int  # in the compute buffer, for converted tensors (else -1)

    @property
    def converted(self) -> bool:
        return self.storage_dtype != self.compute_dtype

    @property
    def numel(self) -> int:
        return self.shape.numel()


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


@dataclass(frozen=True, slots=True)
class BlockSizes:
    """What a model's streamed blocks take, as `StreamedBlocks` lays them out: each block's bytes as
    stored, the largest conversion buffer one block needs, and the model's bytes outside the blocks."""

    block_bytes: tuple[int, ...]
    compute_bytes: int
    outside_bytes: int


def block_layout_bytes(tensors: Iterable[tuple[int, torch.dtype, torch.dtype]]) -> tuple[int, int]:
    """(bytes as stored, bytes of its conversion buffer) of a block holding tensors of
    (element count, storage type, compute type): the same arithmetic as a laid-out block's."""
    stored = compute = 0
    for numel, storage, compute_dtype in tensors:
        stored += _aligned(numel * storage.itemsize)
        if storage != compute_dtype:
            compute += _aligned(numel * compute_dtype.itemsize)
    return stored, compute


def _layout(block: torch.nn.Module, dtype_of: DtypeRule) -> tuple[list[PlacedTensor], int, int]:
    placed: list[PlacedTensor] = []
    offset = compute = 0
    for module in block.modules():
        tensors: list[tuple[str, torch.Tensor, bool]] = [
            (n, t, True) for n, t in module.named_parameters(recurse=False)
        ]
        tensors += [(n, t, False) for n, t in module.named_buffers(recurse=False) if t is not None]
        for name, tensor, is_param in tensors:
            storage, compute_dtype = dtype_of(module, name, tensor)
            nbytes = tensor.numel() * storage.itemsize
            compute_offset = -1
            if storage != compute_dtype:
                compute_offset = compute
                compute += _aligned(tensor.numel() * compute_dtype.itemsize)
            placed.append(
                PlacedTensor(
                    module,
                    name,
                    is_param,
                    tensor.shape,
                    storage,
                    compute_dtype,
                    offset,
                    nbytes,
                    compute_offset,
                )
            )
            offset += _aligned(nbytes)
    return placed, offset, compute


def storage_view(buffer: torch.Tensor, p: PlacedTensor) -> torch.Tensor:
    """Tensor `p` as stored inside its block's byte buffer (host, GPU or slot)."""
    return buffer[p.offset : p.offset + p.nbytes].view(p.storage_dtype).view(p.shape)


def _compute_view(buffer: torch.Tensor, p: PlacedTensor) -> torch.Tensor:
    size = p.numel * p.compute_dtype.itemsize
    return buffer[p.compute_offset : p.compute_offset + size].view(p.compute_dtype).view(p.shape)


def _set(p: PlacedTensor, tensor: torch.Tensor) -> None:
    if not p.is_param:
        p.module._buffers[p.name] = tensor
        return
    param = p.module._parameters[p.name]
    if param is None or param.is_meta:
        p.module._parameters[p.name] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        param.data = tensor


def _point(placed: Sequence[PlacedTensor], buffer: torch.Tensor) -> None:
    """Make every tensor of a block a view into `buffer` (host, GPU or slot) without new allocations."""
    for p in placed:
        _set(p, storage_view(buffer, p))


BlockFill = Callable[[int, Sequence[PlacedTensor], torch.Tensor], None]
"""fill(block index, its tensors, buffer): write the block's tensors into `buffer` (see `storage_view`)."""


class StreamedBlocks:
    """Blocks run in a fixed order, some resident on the GPU, the rest streamed per the plan."""

    def __init__(
        self,
        blocks: Sequence[torch.nn.Module],
        device: torch.device,
        name: str,
        dtype_of: DtypeRule,
        wrap: bool = True,
    ):
        self.name = name
        self.dtype_of = dtype_of
        self._blocks = list(blocks)
        self._device = device
        self._wrap = wrap  # prefetch the next pass's first blocks at the end of a pass
        layouts = [_layout(b, dtype_of) for b in self._blocks]
        self._placed = [p for p, _, _ in layouts]
        self.block_bytes: tuple[int, ...] = tuple(size for _, size, _ in layouts)
        self.compute_bytes = max((c for _, _, c in layouts), default=0)
        self._converts = [any(p.converted for p in placed) for placed in self._placed]
        self._gpu: list[torch.Tensor | None] = [None] * len(self._blocks)
        self._host: list[torch.Tensor | None] = [None] * len(self._blocks)
        self._streamed: set[int] = set()
        self._slots: list[torch.Tensor] = []
        self._slot_bytes = 0
        self._compute: torch.Tensor | None = None
        self._schedule = PrefetchSchedule((), 0)
        self._copy_stream = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        self._ready: list[torch.cuda.Event] = []
        self._free: list[torch.cuda.Event] = []
        self._running_slot: dict[int, int] = {}
        # (block, position of the tensor in the block) -> what its stored values are multiplied by when
        # converted to the compute type (per-tensor scaled float8; absent means 1).
        self._scales: dict[tuple[int, int], float] = {}
        self.copied_bytes = 0  # host -> GPU bytes since start, for the benchmark
        for index, block in enumerate(self._blocks):
            block.register_forward_pre_hook(self._make_pre_hook(index))
            block.register_forward_hook(self._make_post_hook(index))

    @property
    def modules(self) -> Sequence[torch.nn.Module]:
        return self._blocks

    def set_scale(self, block: int, position: int, scale: float) -> None:
        """Tensor `position` of `block` is stored divided by `scale` (see `fp8_linear.scaled_fp8`)."""
        self._scales[(block, position)] = scale

    # -- placement ---------------------------------------------------------------------------
    def load(self, plan: StreamPlan, fill: BlockFill) -> None:
        """Place every block for the first time: its tensors are written by `fill` straight into the
        GPU buffer (resident) or the host buffer (streamed) that the plan gives it.

        A host buffer that the reading threads fill directly is page-locked once filled: they fault
        its pages in side by side, where locking it empty has the driver fault and zero them one by
        one (4.9 s of a 6.5 s read, measured on the H200). A block whose types are converted is
        written by the GPU, and a copy to pageable memory is far slower (it doubled the read when
        tried): locked first."""
        self._check(plan)
        for index in range(len(self._blocks)):
            if index in plan.resident:
                buffer = torch.empty(self.block_bytes[index], dtype=torch.uint8, device=self._device)
                fill(index, self._placed[index], buffer)
                self._gpu[index] = buffer
            elif self._converts[index]:
                buffer = page_locked(self.block_bytes[index])
                fill(index, self._placed[index], buffer)
                self._host[index] = buffer
            else:
                buffer = torch.empty(self.block_bytes[index], dtype=torch.uint8)
                fill(index, self._placed[index], buffer)
                buffer = lock_pages(buffer)
                self._host[index] = buffer
            _point(self._placed[index], buffer)
        self._adopt(plan)

    def apply(self, plan: StreamPlan) -> None:
        """Move the blocks whose placement changes, one at a time, and size the slots."""
        self._check(plan)
        torch.cuda.synchronize(self._device)
        self._slots = []
        self._compute = None
        # Streamed first, so that GPU memory is freed before new resident blocks are uploaded.
        for index in sorted(plan.streamed):
            on_gpu = self._gpu[index]
            if on_gpu is None:
                continue
            host = page_locked(self.block_bytes[index])
            host.copy_(on_gpu)
            _point(self._placed[index], host)
            self._host[index], self._gpu[index] = host, None
        for index in sorted(plan.resident):
            on_host = self._host[index]
            if on_host is None:
                continue
            gpu = on_host.to(self._device)
            _point(self._placed[index], gpu)
            self._gpu[index], self._host[index] = gpu, None
            release_page_locked(on_host)
        self._adopt(plan)

    def _check(self, plan: StreamPlan) -> None:
        if len(plan.block_bytes) != len(self._blocks):
            raise ValueError(
                f"{self.name}: plan for {len(plan.block_bytes)} blocks, have {len(self._blocks)}"
            )

    def _adopt(self, plan: StreamPlan) -> None:
        self._streamed = set(plan.streamed)
        self._slot_bytes = plan.slot_bytes
        self._schedule = PrefetchSchedule(plan.streamed, plan.slots, wrap=self._wrap)
        self._ready = [torch.cuda.Event() for _ in range(plan.slots)]  # type: ignore[no-untyped-call]
        self._free = [torch.cuda.Event() for _ in range(plan.slots)]  # type: ignore[no-untyped-call]
        self._running_slot.clear()
        self.allocate_slots()

    def allocate_slots(self) -> None:
        """(Re)create the slot buffers and the compute buffer; a no-op when they exist."""
        if self.compute_bytes and self._compute is None:
            self._compute = torch.empty(self.compute_bytes, dtype=torch.uint8, device=self._device)
        if self._slots or not self._streamed:
            return
        self._slots = [
            torch.empty(self._slot_bytes, dtype=torch.uint8, device=self._device)
            for _ in range(self._schedule.slots)
        ]
        self._schedule.reset()

    def release_slots(self) -> None:
        """Free the slot and compute buffers (T5 between prompts) once pending copies are done."""
        if not self._slots and self._compute is None:
            return
        self._copy_stream.synchronize()
        torch.cuda.current_stream(self._device).synchronize()
        self._slots = []
        self._compute = None
        self._schedule.reset()

    def recover(self) -> None:
        """After an error mid-pass: wait for the GPU, point blocks at their own storage, resync."""
        torch.cuda.synchronize(self._device)
        for index, placed in enumerate(self._placed):
            home = self._gpu[index] if self._gpu[index] is not None else self._host[index]
            if home is not None:
                _point(placed, home)
        self._running_slot.clear()
        self._schedule.reset()

    @property
    def resident_bytes(self) -> int:
        return sum(self.block_bytes[i] for i, g in enumerate(self._gpu) if g is not None)

    @property
    def host_bytes(self) -> int:
        return sum(self.block_bytes[i] for i, h in enumerate(self._host) if h is not None)

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
            if index in self._streamed:
                self.allocate_slots()
                start = self._schedule.start(index)
                if start.resynced:
                    log.debug("%s: prefetch cycle restarted at block %d", self.name, index)
                for copy in start.copies:
                    self._issue(copy.block, copy.slot)
                torch.cuda.current_stream(self._device).wait_event(self._ready[start.slot])
                self._running_slot[index] = start.slot
                source = self._slots[start.slot]
            elif self._converts[index]:
                self.allocate_slots()
                resident = self._gpu[index]
                assert resident is not None
                source = resident
            else:
                return  # resident and computed as stored: nothing to do
            if not self._converts[index]:
                _point(self._placed[index], source)
                return
            assert self._compute is not None
            for position, p in enumerate(self._placed[index]):
                if p.converted:
                    target = _compute_view(self._compute, p)
                    target.copy_(storage_view(source, p))
                    scale = self._scales.get((index, position))
                    if scale is not None:
                        target.mul_(scale)
                    _set(p, target)
                else:
                    _set(p, storage_view(source, p))

        return pre_hook

    def _make_post_hook(self, index: int):  # type: ignore[no-untyped-def]
        def post_hook(module: torch.nn.Module, args: object, output: object) -> None:
            slot = self._running_slot.pop(index, None)
            if slot is not None:
                self._free[slot].record(torch.cuda.current_stream(self._device))
            if slot is not None or self._converts[index]:
                home = self._host[index] if self._host[index] is not None else self._gpu[index]
                assert home is not None
                _point(self._placed[index], home)

        return post_hook


_registered: set[int] = set()


def page_locked(nbytes: int) -> torch.Tensor:
    """A host byte buffer of exactly `nbytes`, page-locked in place so copies from it are asynchronous
    DMA (the pinned allocator would round it up to a power of two)."""
    return lock_pages(torch.empty(nbytes, dtype=torch.uint8))


def lock_pages(buffer: torch.Tensor) -> torch.Tensor:
    """`buffer` page-locked in place (contents kept); a pinned copy if the driver refuses."""
    cudart = torch.cuda.cudart()  # type: ignore[no-untyped-call]
    code = cudart.cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)
    if int(code) != 0:
        _clear_cuda_error()  # else the next kernel launch reports this failure as its own
        log.warning("cudaHostRegister failed (%s); using the pinned allocator instead", code)
        return buffer.pin_memory()
    _registered.add(buffer.data_ptr())
    return buffer


def _clear_cuda_error() -> None:
    """cudaGetLastError from the CUDA runtime torch loaded (torch exposes no binding for it)."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            ctypes.CDLL(name).cudaGetLastError()
            return
        except (OSError, AttributeError):
            continue


def release_page_locked(buffer: torch.Tensor) -> None:
    """Unlock a buffer from `page_locked` before it is freed."""
    if buffer.data_ptr() in _registered:
        _registered.discard(buffer.data_ptr())
        torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())  # type: ignore[no-untyped-call]


def place_outside_blocks(
    root: torch.nn.Module,
    blocks: Sequence[torch.nn.Module],
    device: torch.device,
    dtype_of: DtypeRule,
    fill: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> int:
    """Create every parameter and buffer of `root` outside `blocks` on `device`, filled by
    fill(qualified name, tensor as it was, destination); returns the bytes placed. A tensor shared by
    two modules (tied embeddings) is placed once and shared again."""
    inside = {id(m) for b in blocks for m in b.modules()}
    placed = 0
    replaced: dict[int, torch.Tensor] = {}
    for module_name, module in root.named_modules():
        if id(module) in inside:
            continue
        for kind in ("_parameters", "_buffers"):
            tensors: dict[str, torch.Tensor | None] = getattr(module, kind)
            for name, tensor in list(tensors.items()):
                if tensor is None:
                    continue
                if id(tensor) in replaced:
                    tensors[name] = replaced[id(tensor)]
                    continue
                storage, _ = dtype_of(module, name, tensor)
                target = torch.empty(tensor.shape, dtype=storage, device=device)
                fill(f"{module_name}.{name}" if module_name else name, tensor, target)
                new = torch.nn.Parameter(target, requires_grad=False) if kind == "_parameters" else target
                tensors[name] = new
                replaced[id(tensor)] = new
                placed += target.numel() * target.element_size()
    return placed
