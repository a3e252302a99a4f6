"""Which transformer blocks stay on the GPU for a memory budget, and in what order the rest are copied.

Pure arithmetic over byte counts: no torch, so the rules are tested on a CPU. `engine.layer_streaming`
carries a plan out with CUDA streams and events.

Model: a network is a list of blocks run in a fixed order (the DiT: 19 double then 38 single blocks;
T5: 24 layers), plus small parts that always stay resident. A streamed block lives in pinned host memory
and is copied into one of `slots` GPU buffers just before it runs; copies of the next streamed blocks
overlap the compute of the current ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1024**3


class BudgetTooSmall(ValueError):
    """Even with every block streamed, the fixed parts and workspace do not fit the budget."""


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The outcome for one network: resident blocks, streamed blocks (execution order), slot buffers."""

    block_bytes: tuple[int, ...]  # per block, in execution order
    resident: frozenset[int]
    streamed: tuple[int, ...]  # indices in execution order = the order they are prefetched
    slots: int  # GPU buffers for streamed blocks (0 when nothing is streamed)
    slot_bytes: int  # size of each slot: the largest streamed block

    @property
    def resident_bytes(self) -> int:
        return sum(self.block_bytes[i] for i in self.resident)

    @property
    def slot_total_bytes(self) -> int:
        return self.slots * self.slot_bytes

    @property
    def gpu_bytes(self) -> int:
        """What this network's blocks hold on the GPU at most: resident blocks plus all slots."""
        return self.resident_bytes + self.slot_total_bytes

    @property
    def streamed_bytes(self) -> int:
        """Bytes copied host -> GPU for one pass over the network."""
        return sum(self.block_bytes[i] for i in self.streamed)

    @property
    def all_resident(self) -> bool:
        return not self.streamed


def _spread(candidates: Sequence[int], count: int) -> list[int]:
    """`count` of `candidates` evenly spaced, so that streamed blocks alternate with resident ones
    and each copy overlaps the compute of the resident blocks before it."""
    n = len(candidates)
    if count <= 0:
        return []
    if count >= n:
        return list(candidates)
    return [candidates[int((k + 0.5) * n / count)] for k in range(count)]


def plan_blocks(block_bytes: Sequence[int], available: int, slots: int = 2) -> StreamPlan:
    """Keep as many block bytes resident as fit in `available`, counting the slot buffers.

    Minimises the bytes streamed per pass. A slot must hold the largest streamed block, so the
    search tries each distinct block size as the slot size: blocks larger than it stay resident.
    Raises BudgetTooSmall when not even streaming everything fits.
    """
    sizes = tuple(int(b) for b in block_bytes)
    if not sizes:
        return StreamPlan(sizes, frozenset(), (), 0, 0)
    if sum(sizes) <= available:
        return StreamPlan(sizes, frozenset(range(len(sizes))), (), 0, 0)
    best: StreamPlan | None = None
    for slot_bytes in sorted(set(sizes)):
        forced = [i for i, s in enumerate(sizes) if s > slot_bytes]
        candidates = [i for i, s in enumerate(sizes) if s <= slot_bytes]
        n_slots = min(slots, len(candidates))
        room = available - n_slots * slot_bytes - sum(sizes[i] for i in forced)
        if room < 0:
            continue
        # Fill the room largest-first: with the two or three block sizes of real networks this
        # is the knapsack optimum or within one small block of it.
        by_size: dict[int, list[int]] = {}
        for i in candidates:
            by_size.setdefault(sizes[i], []).append(i)
        keep: list[int] = []
        streamed: list[int] = []
        for size in sorted(by_size, reverse=True):
            group = by_size[size]
            n_keep = min(len(group), room // size)
            room -= n_keep * size
            # Of each size class, the streamed ones are spread evenly over execution order.
            out = _spread(group, len(group) - n_keep)
            streamed.extend(out)
            keep.extend(i for i in group if i not in set(out))
        if not streamed:
            continue
        # The largest streamed block decides the real slot size (may be below slot_bytes).
        real_slot = max(sizes[i] for i in streamed)
        plan = StreamPlan(
            block_bytes=sizes,
            resident=frozenset(forced + keep),
            streamed=tuple(sorted(streamed)),
            slots=min(slots, len(streamed)),
            slot_bytes=real_slot,
        )
        if best is None or plan.streamed_bytes < best.streamed_bytes:
            best = plan
    if best is None:
        raise BudgetTooSmall(
            f"{available / GIB:.2f} GiB left for weights cannot hold {slots} slots of the largest block "
            f"({max(sizes) / GIB:.2f} GiB); raise engine.vram_budget_gib."
        )
    return best


def all_streamed(block_bytes: Sequence[int], slots: int = 2) -> StreamPlan:
    """Every block streamed through `slots` buffers (T5: it runs once per new prompt)."""
    sizes = tuple(int(b) for b in block_bytes)
    n_slots = min(slots, len(sizes))
    return StreamPlan(sizes, frozenset(), tuple(range(len(sizes))), n_slots, max(sizes, default=0))


@dataclass(frozen=True, slots=True)
class EnginePlan:
    """The memory plan of the whole pipeline for one allocator budget.

    Two phases share the GPU: the text phase (T5 streams through its slots and a compute buffer, which
    exist only while a new prompt is encoded) and the image phase (DiT steps, then the VAE decode).
    The workspace is what the largest planned request needs in the image phase; the text phase's own
    buffers come out of the same room, so they never add to the peak.
    """

    budget_bytes: int
    workspace_bytes: int  # image phase: DiT activations (and the VAE decode, tiled to fit)
    fixed_bytes: int  # always resident: CLIP, VAE, the DiT's and T5's parts outside their blocks
    dit: StreamPlan
    t5: StreamPlan  # always streamed
    t5_pass_bytes: int  # text phase: T5 slots + compute buffer + activations

    @property
    def room_bytes(self) -> int:
        """What the two phases take turns with: the larger of the workspace and the T5 pass."""
        return max(self.workspace_bytes, self.t5_pass_bytes)

    @property
    def dit_phase_bytes(self) -> int:
        """Accounted GPU bytes while the DiT or VAE runs."""
        return self.fixed_bytes + self.dit.gpu_bytes + self.workspace_bytes

    @property
    def text_phase_bytes(self) -> int:
        """Accounted GPU bytes while T5 encodes."""
        return self.fixed_bytes + self.dit.gpu_bytes + self.t5_pass_bytes

    @property
    def peak_bytes(self) -> int:
        return max(self.dit_phase_bytes, self.text_phase_bytes)

    @property
    def strategy(self) -> str:
        """A short name for logs and image metadata."""
        if self.dit.all_resident:
            return f"fp8 DiT resident, T5 streamed (budget {self.budget_bytes / GIB:.1f} GiB)"
        return (
            f"fp8 DiT {len(self.dit.resident)}/{len(self.dit.block_bytes)} blocks resident, "
            f"{self.dit.streamed_bytes / GIB:.1f} GiB streamed per step, T5 streamed "
            f"(budget {self.budget_bytes / GIB:.1f} GiB)"
        )


def plan_engine(
    budget_bytes: int,
    workspace_bytes: int,
    fixed_bytes: int,
    dit_blocks: Sequence[int],
    t5_blocks: Sequence[int],
    t5_extra_bytes: int = 0,
    slots: int = 2,
) -> EnginePlan:
    """Keep as many DiT blocks resident as the budget allows after the fixed parts and the room that
    the image phase (workspace) and the text phase (T5 slots + `t5_extra_bytes`) take in turn.

    Raises BudgetTooSmall when not even streaming every block fits.
    """
    t5 = all_streamed(t5_blocks, slots)
    t5_pass = t5.slot_total_bytes + t5_extra_bytes
    room = max(workspace_bytes, t5_pass)
    available = budget_bytes - fixed_bytes - room
    if available < 0:
        raise BudgetTooSmall(
            f"{budget_bytes / GIB:.2f} GiB cannot hold the fixed parts ({fixed_bytes / GIB:.2f} GiB) "
            f"and the working room ({room / GIB:.2f} GiB)."
        )
    dit = plan_blocks(dit_blocks, available, slots)
    plan = EnginePlan(budget_bytes, workspace_bytes, fixed_bytes, dit, t5, t5_pass)
    if plan.peak_bytes > budget_bytes:  # cannot happen by construction; guards later edits
        raise BudgetTooSmall(f"plan needs {plan.peak_bytes / GIB:.2f} GiB of {budget_bytes / GIB:.2f} GiB")
    return plan


class PlanHolder:
    """The plan in force: the planned one, or a smaller one taken after an out-of-memory error, which
    lasts for the retry of that job only."""

    def __init__(self, base: EnginePlan) -> None:
        self.base = base
        self.current = base
        self._retry_pending = False

    def reduce(self, smaller: EnginePlan) -> None:
        """Use `smaller` for the retry of the job that ran out of memory."""
        self.current = smaller
        self._retry_pending = True

    def rebase(self, base: EnginePlan) -> None:
        """A new planned plan (after measuring the card again)."""
        self.base = self.current = base
        self._retry_pending = False

    def next_run(self) -> EnginePlan | None:
        """Called before each run: the plan to switch to, or None to keep the current one."""
        if self.current is self.base:
            return None
        if self._retry_pending:
            self._retry_pending = False
            return None
        self.current = self.base
        return self.base


@dataclass(frozen=True, slots=True)
class CopyOrder:
    """Copy `block` into `slot`; it is the `sequence`-th streamed block run since the last reset."""

    block: int
    slot: int
    sequence: int


@dataclass(frozen=True, slots=True)
class BlockStart:
    """What the streamer does when a streamed block is about to run."""

    slot: int  # where the block's weights are (after its copy's event)
    copies: tuple[CopyOrder, ...]  # copies to issue now, in this order, before waiting
    resynced: bool  # the block was not the expected next one (after an error): a new cycle starts here


class PrefetchSchedule:
    """The order of host -> GPU copies for a fixed cycle of streamed blocks.

    The n-th streamed block run (counting across steps and jobs) uses slot n % slots. When block n
    starts, copies up to block n + slots - 1 are issued: that last copy reuses the slot of block n - 1,
    which has finished. So at most `slots` blocks occupy slots, and copies follow execution order.
    """

    def __init__(self, streamed: Sequence[int], slots: int, wrap: bool = True) -> None:
        """`wrap`: at the end of a pass, prefetch the next pass's first blocks (the DiT, whose next
        step or job follows); without it a pass leaves no copies behind (T5, whose slots are freed)."""
        if streamed and slots < 1:
            raise ValueError("streaming needs at least one slot")
        self._wrap = wrap
        self._order = tuple(streamed)
        self._position = {block: pos for pos, block in enumerate(self._order)}
        self._slots = slots
        self._next_run = 0  # sequence number of the next block expected to run
        self._next_copy = 0  # sequence number of the next copy to issue
        self._synced = False

    @property
    def slots(self) -> int:
        return self._slots

    def reset(self) -> None:
        """Forget in-flight copies (after an error mid-pass); the next start resynchronises."""
        self._synced = False

    def start(self, block: int) -> BlockStart:
        """Called just before streamed `block` runs."""
        length = len(self._order)
        position = self._position[block]
        resynced = False
        if not self._synced or self._next_run % length != position:
            # Start a fresh cycle at this block. Stale copies already issued are harmless: each
            # copy waits for its slot's last user, and the streamer waits for this block's copy.
            resynced = self._next_copy > 0
            self._next_run = -(-self._next_copy // length) * length + position
            self._next_copy = self._next_run
            self._synced = True
        copies = []
        limit = self._next_run + self._slots
        if not self._wrap:
            limit = min(limit, (self._next_run // length + 1) * length)
        while self._next_copy < limit:
            seq = self._next_copy
            copies.append(CopyOrder(block=self._order[seq % length], slot=seq % self._slots, sequence=seq))
            self._next_copy += 1
        slot = self._next_run % self._slots
        self._next_run += 1
        return BlockStart(slot=slot, copies=tuple(copies), resynced=resynced)
