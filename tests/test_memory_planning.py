"""The engine's memory planning for the cards it is for, on the CPU: the budget from the memory a card has
free (a fake `mem_get_info`), the room each request needs by its size, the VAE decode and DiT chunking
for every size the limits allow, refusing what cannot fit, host RAM, and giving up a smaller plan.

Cards are modelled as the issue's simulated ones: 11.5, 7.5 and 5.5 GiB free before the engine starts;
this process's CUDA context (0.52 GiB) and kernels (0.16 GiB) were measured on an H200."""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import pytest
import torch

from engine import gpu_budget
from engine.gpu_budget import ALLOCATOR_SLACK_BYTES, LATE_KERNEL_BYTES, SPARE_BYTES, CardMemory, measure_card
from engine.host_memory import HostNeed, estimated_need, read_meminfo, shortfall
from engine.memory_model import (
    GIB,
    MIB,
    T5_ACTIVATION_BYTES,
    dit_step_bytes,
    fit_request,
    largest_square_side,
    plan_decode,
    planned_room_bytes,
    vae_decode_bytes,
)
from engine.vram_plan import PlanHolder, plan_engine

SHAPES_FILE = Path(__file__).parent / "data" / "flux_model_shapes.json.gz"
CONTEXT = int(0.52 * GIB)
KERNELS = int(0.164 * GIB)
MAX_PIXELS = 2048 * 2048
CARDS = {12: 11.5, 8: 7.5, 6: 5.5}  # card GB -> GiB free at start


def _blocks() -> tuple[list[int], list[int], int, int]:
    """(DiT block bytes, T5 block bytes, fixed bytes, T5 compute buffer bytes) as the engine stores them:
    linear weights float8, everything else bf16; T5's linears computed from a bf16 buffer."""
    with gzip.open(SHAPES_FILE, "rt") as f:
        shapes = json.load(f)

    def size(name: str, shape: list[int]) -> int:
        linear = name.endswith(".weight") and len(shape) == 2 and "embed" not in name
        linear = linear and "relative_attention_bias" not in name and "shared" not in name
        return math.prod(shape) * (1 if linear else 2)

    dit = [0] * 57
    fixed = 0
    for name, shape in shapes["dit"].items():
        m = re.match(r"model\.diffusion_model\.(double|single)_blocks\.(\d+)\.", name)
        if m:
            dit[int(m.group(2)) + (19 if m.group(1) == "single" else 0)] += size(name, shape)
        else:
            fixed += size(name, shape)
    t5 = [0] * 24
    compute = [0] * 24
    for name, shape in shapes["text_encoder_t5"].items():
        m = re.match(r"encoder\.block\.(\d+)\.", name)
        if m:
            t5[int(m.group(1))] += size(name, shape)
            if size(name, shape) == math.prod(shape):
                compute[int(m.group(1))] += 2 * math.prod(shape)
        else:
            fixed += size(name, shape)
    for part in ("text_encoder_clip", "vae"):
        fixed += sum(2 * math.prod(s) for s in shapes[part].values())
    return dit, t5, fixed, max(compute)


def _card(free_gib: float) -> CardMemory:
    total = int(139.8 * GIB)
    return CardMemory(
        total=total, free_after_context=int(free_gib * GIB) - CONTEXT, context=CONTEXT, kernels=KERNELS
    )


def _plan(card: CardMemory, operator_budget: int | None = None):  # type: ignore[no-untyped-def]
    dit, t5, fixed, compute = _blocks()
    return plan_engine(
        card.allocator_budget(operator_budget),
        planned_room_bytes(MAX_PIXELS),
        fixed,
        dit,
        t5,
        compute + T5_ACTIVATION_BYTES,
    )


def _allowed_sizes() -> list[tuple[int, int]]:
    """Every aspect ratio the parser offers at its default size, and the extremes the limits allow."""
    from bot.command_parser import _ASPECT_SIZES

    sizes = set(_ASPECT_SIZES.values())
    sizes |= {(2048, 2048), (1536, 640), (640, 1536), (2048, 1024), (1024, 2048), (256, 256), (1280, 1280)}
    return sorted(sizes)


def test_the_budget_starts_from_what_is_free_after_this_process_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free = [int(7.0 * GIB)]
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free[0], int(139.8 * GIB)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(gpu_budget, "_process_context_bytes", lambda device: None)
    real_warm = gpu_budget._warm_kernels

    def warm(device: torch.device, fp8: bool) -> None:
        real_warm(device, fp8)  # the real kernels, on the CPU here
        free[0] -= 150 * MIB  # what loading them cost outside the allocator

    monkeypatch.setattr(gpu_budget, "_warm_kernels", warm)
    card = measure_card(torch.device("cpu"))
    assert card.free_after_context == int(7.0 * GIB)
    assert card.kernels == 150 * MIB
    assert card.context == gpu_budget.CONTEXT_ESTIMATE_BYTES
    budget = card.allocator_budget(None)
    assert budget == int(7.0 * GIB) - 150 * MIB - LATE_KERNEL_BYTES - ALLOCATOR_SLACK_BYTES - SPARE_BYTES


def test_an_operator_budget_caps_the_whole_process_context_included() -> None:
    card = _card(11.5)
    capped = card.allocator_budget(8 * GIB)
    whole_card = capped + card.context + card.kernels + LATE_KERNEL_BYTES + ALLOCATOR_SLACK_BYTES
    assert whole_card == 8 * GIB
    assert card.allocator_budget(64 * GIB) == card.allocator_budget(None)  # never above what is free


@pytest.mark.parametrize("card_gb", sorted(CARDS))
def test_the_shipped_config_fits_each_card_with_a_quarter_gib_to_spare(card_gb: int) -> None:
    card = _card(CARDS[card_gb])
    plan = _plan(card)
    whole_card = CONTEXT + KERNELS + LATE_KERNEL_BYTES + ALLOCATOR_SLACK_BYTES + plan.peak_bytes
    assert whole_card <= CARDS[card_gb] * GIB - SPARE_BYTES


@pytest.mark.parametrize("encodes", [False, True], ids=["text", "image-to-image"])
@pytest.mark.parametrize("card_gb", sorted(CARDS))
def test_every_allowed_size_runs_on_every_card(card_gb: int, encodes: bool) -> None:
    plan = _plan(_card(CARDS[card_gb]))
    for width, height in _allowed_sizes():
        fit = fit_request(width, height, plan.workspace_bytes, encodes=encodes)
        assert fit.fits, (width, height, card_gb)
        if encodes:
            assert fit.encode is not None
            tile = fit.encode.tile
            side = (
                (width // 8, height // 8) if tile is None else (min(tile, width // 8), min(tile, height // 8))
            )
            assert vae_decode_bytes(*side) <= plan.workspace_bytes
        assert dit_step_bytes(width, height, fit.dit_chunk) <= plan.workspace_bytes
        assert fit.decode is not None
        tile = fit.decode.tile
        latent = (
            (width // 8, height // 8) if tile is None else (min(tile, width // 8), min(tile, height // 8))
        )
        assert vae_decode_bytes(*latent) <= plan.workspace_bytes


def test_the_default_size_runs_exactly_as_diffsynth_and_the_largest_in_chunks_and_tiles() -> None:
    room = planned_room_bytes(MAX_PIXELS)
    default = fit_request(1024, 1024, room)
    assert default.dit_chunk is None and not default.decode.tiled  # type: ignore[union-attr]
    largest = fit_request(2048, 2048, room)
    assert largest.dit_chunk is not None and largest.decode.tiled  # type: ignore[union-attr]
    # 2048x2048 decoded whole asks for tens of GiB (36.8 measured): the reason for tiles.
    assert vae_decode_bytes(256, 256) > 30 * GIB


def test_the_room_grows_with_the_pixel_count() -> None:
    assert dit_step_bytes(2048, 2048, None) > 4 * dit_step_bytes(512, 512, None) > 0
    assert dit_step_bytes(2048, 2048, 2048) < dit_step_bytes(2048, 2048, None) / 2
    assert vae_decode_bytes(128, 128) > vae_decode_bytes(64, 64) > vae_decode_bytes(32, 32)
    assert planned_room_bytes(1024 * 1024) <= planned_room_bytes(2048 * 2048)


def test_what_cannot_fit_is_refused_with_a_size_that_can() -> None:
    room = int(0.9 * GIB)
    assert not fit_request(2048, 2048, room).fits
    side = largest_square_side(room)
    assert 256 <= side < 2048
    assert fit_request(side, side, room).fits and not fit_request(side + 64, side + 64, room).fits
    assert plan_decode(2048, 2048, 64 * MIB) is None  # not even the smallest tile


@pytest.mark.parametrize(("card_gb", "limit_gib"), [(12, 14), (8, 16)])
def test_host_ram_stays_within_what_these_cards_owners_have(card_gb: int, limit_gib: int) -> None:
    plan = _plan(_card(CARDS[card_gb]))
    _, t5, _, _ = _blocks()
    need = HostNeed(plan.dit.streamed_bytes + sum(t5))
    assert need.total <= limit_gib * GIB, need.describe()


def test_doctor_estimate_is_close_to_the_plan() -> None:
    for card_gb, free in CARDS.items():
        plan = _plan(_card(free))
        _, t5, _, _ = _blocks()
        planned = HostNeed(plan.dit.streamed_bytes + sum(t5)).total
        estimate = estimated_need(int(free * GIB)).total
        assert abs(estimate - planned) < 1.5 * GIB, card_gb


def test_too_little_ram_is_said_with_the_numbers(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    9000000 kB\nSwapFree: 0 kB\n"
    )
    machine = read_meminfo(meminfo)
    assert machine is not None and machine.available == 9000000 * 1024
    problem = shortfall(HostNeed(int(12 * GIB)), machine)
    assert problem is not None
    assert "14.5 GiB" in problem and "8.6 GiB available" in problem
    assert shortfall(HostNeed(int(2 * GIB)), machine) is None
    assert read_meminfo(tmp_path / "missing") is None


def test_a_smaller_plan_after_out_of_memory_lasts_for_the_retry_only() -> None:
    card = _card(7.5)
    base = _plan(card)
    smaller = plan_engine(
        int(base.budget_bytes * 0.75),
        base.workspace_bytes,
        base.fixed_bytes,
        base.dit.block_bytes,
        base.t5.block_bytes,
        base.t5_pass_bytes - base.t5.slot_total_bytes,
    )
    assert smaller.dit.streamed_bytes > base.dit.streamed_bytes
    holder = PlanHolder(base)
    assert holder.next_run() is None  # nothing to change
    holder.reduce(smaller)
    assert holder.current is smaller
    assert holder.next_run() is None  # the retry of the job that ran out of memory keeps it
    assert holder.next_run() is base  # the next job is back on the planned one
    assert holder.current is base and holder.next_run() is None
