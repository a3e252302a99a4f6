"""engine.vram_plan: resident blocks for a budget, prefetch order, and the budget in accounting."""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import pytest

from engine.vram_plan import GIB, BudgetTooSmall, PrefetchSchedule, plan_blocks, plan_engine

SHAPES_FILE = Path(__file__).parent / "data" / "flux_model_shapes.json.gz"


def _block_bytes(shapes: dict[str, list[int]], pattern: str, count: int, element: int) -> list[int]:
    sizes = [0] * count
    for name, shape in shapes.items():
        m = re.match(pattern, name)
        if m:
            sizes[int(m.group(1))] += math.prod(shape) * element
    return sizes


def _real_blocks() -> tuple[list[int], list[int]]:
    """Byte sizes of the real FLUX DiT blocks (float8) and T5-XXL layers (bf16), in execution order."""
    with gzip.open(SHAPES_FILE, "rt") as f:
        shapes = json.load(f)
    double = _block_bytes(shapes["dit"], r"model\.diffusion_model\.double_blocks\.(\d+)\.", 19, 1)
    single = _block_bytes(shapes["dit"], r"model\.diffusion_model\.single_blocks\.(\d+)\.", 38, 1)
    t5 = _block_bytes(shapes["text_encoder_t5"], r"encoder\.block\.(\d+)\.", 24, 2)
    return double + single, t5


FIXED = int(0.8 * GIB)
ROOM = int(2.6 * GIB)
T5_EXTRA = int(0.6 * GIB)  # compute buffer + activations


def test_real_block_sizes_are_plausible() -> None:
    dit, t5 = _real_blocks()
    assert 11.5 * 1e9 < sum(dit) < 12.0 * 1e9
    assert all(b > 0 for b in dit + t5)
    assert 9.0 * 1e9 < sum(t5) < 9.6 * 1e9


def test_everything_resident_without_a_tight_budget() -> None:
    dit, t5 = _real_blocks()
    plan = plan_engine(80 * GIB, ROOM, FIXED, dit, t5, T5_EXTRA)
    assert plan.dit.all_resident and plan.dit.slots == 0
    assert plan.t5.streamed == tuple(range(24))  # T5 always streams: it runs once per new prompt
    assert plan.strategy.startswith("fp8 DiT resident")
    assert plan.peak_bytes <= 80 * GIB


@pytest.mark.parametrize("budget_gib", [5, 6, 8, 10, 12, 16, 24, 32])
def test_budget_is_never_exceeded(budget_gib: int) -> None:
    dit, t5 = _real_blocks()
    budget = budget_gib * GIB
    plan = plan_engine(budget, ROOM, FIXED, dit, t5, T5_EXTRA)
    assert plan.dit_phase_bytes <= budget
    assert plan.text_phase_bytes <= budget
    # The text phase's buffers come out of the room the image phase uses: they never add to the peak.
    assert plan.peak_bytes == FIXED + plan.dit.gpu_bytes + max(ROOM, plan.t5_pass_bytes)
    net = plan.dit
    assert net.resident.isdisjoint(net.streamed)
    assert net.resident | set(net.streamed) == set(range(len(net.block_bytes)))
    assert list(net.streamed) == sorted(net.streamed)  # prefetch order = execution order
    if net.streamed:
        assert net.slot_bytes == max(net.block_bytes[i] for i in net.streamed)
        assert 1 <= net.slots <= 2


def test_more_budget_streams_less() -> None:
    dit, t5 = _real_blocks()
    streamed = [
        plan_engine(b * GIB, ROOM, FIXED, dit, t5, T5_EXTRA).dit.streamed_bytes for b in (6, 8, 10, 12, 16)
    ]
    assert streamed == sorted(streamed, reverse=True)
    assert streamed[-1] == 0  # 16 GiB holds the whole float8 DiT


def test_a_budget_below_the_fixed_parts_and_room_is_refused() -> None:
    dit, t5 = _real_blocks()
    with pytest.raises(BudgetTooSmall, match="working room"):
        plan_engine(3 * GIB, ROOM, FIXED, dit, t5, T5_EXTRA)


def test_streamed_blocks_are_spread_out() -> None:
    dit, _ = _real_blocks()
    plan = plan_blocks(dit, int(8 * GIB))
    singles = [i for i in plan.streamed if i >= 19]
    # Not bunched at one end: some streamed single block in each half of the single blocks.
    assert any(i < 19 + 19 for i in singles) and any(i >= 19 + 19 for i in singles)
    gaps = [b - a for a, b in zip(plan.streamed, plan.streamed[1:], strict=False)]
    assert max(gaps) <= 4


def test_slot_size_follows_the_largest_streamed_block() -> None:
    plan = plan_blocks([100] * 4 + [40] * 10, available=4 * 100 + 6 * 40 - 1)
    # Streaming one 40-byte block with two 40-byte slots beats streaming any 100-byte block.
    assert plan.slot_bytes == 40 and plan.slots == 2
    assert plan.gpu_bytes <= 4 * 100 + 6 * 40 - 1
    assert all(plan.block_bytes[i] == 40 for i in plan.streamed)


def test_too_small_budget_says_what_to_do() -> None:
    with pytest.raises(BudgetTooSmall, match="vram_budget_gib"):
        plan_blocks([100, 100, 100], available=150)


def _run(
    schedule: PrefetchSchedule,
    execution: list[int],
    streamed: set[int],
    in_slot: dict[int, int] | None = None,
) -> list[tuple[str, int, int]]:
    """Simulate: copies issued and blocks run, checking slot occupancy as we go."""
    events: list[tuple[str, int, int]] = []
    in_slot = {} if in_slot is None else in_slot  # slot -> block copied there
    for block in execution:
        if block not in streamed:
            continue
        start = schedule.start(block)
        for copy in start.copies:
            events.append(("copy", copy.block, copy.slot))
            in_slot[copy.slot] = copy.block
        assert in_slot[start.slot] == block, "a block must run from the slot its copy went to"
        assert len(in_slot) <= schedule.slots
        events.append(("run", block, start.slot))
    return events


def test_prefetch_order_matches_execution_order_across_steps() -> None:
    streamed = [1, 4, 5, 9]
    schedule = PrefetchSchedule(streamed, slots=2)
    execution = list(range(12)) * 3  # three denoising steps
    events = _run(schedule, execution, set(streamed))
    copies = [b for kind, b, _ in events if kind == "copy"]
    runs = [b for kind, b, _ in events if kind == "run"]
    assert runs == streamed * 3
    assert copies == (streamed * 4)[: len(copies)]  # execution order, wrapping into the next step
    assert len(copies) == len(runs) + 1  # exactly one block prefetched ahead with two slots
    # Every copy is issued before its block runs, and a slot is never overwritten before it ran.
    for i, (kind, block, slot) in enumerate(events):
        if kind == "run":
            last_copy = max(j for j, e in enumerate(events[:i]) if e[0] == "copy" and e[2] == slot)
            assert events[last_copy][1] == block


def test_three_slots_prefetch_two_ahead() -> None:
    streamed = [0, 2, 3, 6, 7]
    schedule = PrefetchSchedule(streamed, slots=3)
    first = schedule.start(0)
    assert [c.block for c in first.copies] == [0, 2, 3]
    second = schedule.start(2)
    assert [c.block for c in second.copies] == [6]
    assert second.copies[0].slot == first.slot  # reuses the slot of the block that finished


def test_next_job_reuses_prefetched_blocks() -> None:
    streamed = [3, 8]
    schedule = PrefetchSchedule(streamed, slots=2)
    _run(schedule, list(range(10)), set(streamed))  # one job, one step
    nxt = schedule.start(3)  # the next job: block 3 was prefetched at the end of the last one
    assert not nxt.resynced
    assert [c.block for c in nxt.copies] == [8]


def test_unexpected_block_starts_a_new_cycle() -> None:
    streamed = [1, 2, 3]
    schedule = PrefetchSchedule(streamed, slots=2)
    in_slot: dict[int, int] = {}
    _run(schedule, [1], set(streamed), in_slot)
    schedule.reset()  # e.g. an out-of-memory error inside block 1
    start = schedule.start(1)
    assert start.resynced
    assert [c.block for c in start.copies] == [1, 2]
    in_slot.update({c.slot: c.block for c in start.copies})
    jumped = schedule.start(3)  # skipped block 2: still consistent
    assert jumped.resynced and [c.block for c in jumped.copies] == [3, 1]
    in_slot.update({c.slot: c.block for c in jumped.copies})
    assert in_slot[jumped.slot] == 3
    events = _run(schedule, [1, 2, 3, 1, 2, 3], set(streamed), in_slot)
    assert [b for kind, b, _ in events if kind == "run"] == [1, 2, 3, 1, 2, 3]


def test_without_wrap_a_pass_leaves_no_copies_behind() -> None:
    streamed = [0, 1, 2, 3]
    schedule = PrefetchSchedule(streamed, slots=2, wrap=False)
    for _ in range(2):  # two prompts encoded
        copies = [c.block for b in streamed for c in schedule.start(b).copies]
        assert copies == streamed
