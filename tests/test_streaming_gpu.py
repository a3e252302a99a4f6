"""engine.layer_streaming on a real GPU: streamed blocks give exactly the resident result.

Marked `gpu` (off by default; run on the device with `pytest -m gpu tests/test_streaming_gpu.py`).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu


def _net(device: object) -> tuple[object, list[object]]:
    from engine.fp8_linear import MatmulMode, convert_linears

    torch.manual_seed(0)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.LayerNorm(256))
        for _ in range(7)
    ]
    root = torch.nn.Sequential(*blocks)
    convert_linears(root, torch.bfloat16, MatmulMode.BF16)
    return root, blocks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("wrap", [True, False])
def test_streamed_equals_resident(wrap: bool) -> None:
    from engine.layer_streaming import StreamedBlocks, move_outside_blocks
    from engine.vram_plan import plan_blocks

    device = torch.device("cuda:0")
    root, blocks = _net(device)
    move_outside_blocks(root, blocks, device)
    streamer = StreamedBlocks(blocks, device, "toy", wrap=wrap)
    x = torch.randn(64, 256, device=device, dtype=torch.bfloat16)
    streamer.apply(plan_blocks(streamer.block_bytes, available=10**9))
    with torch.no_grad():
        want = root(x).clone()
    sizes = streamer.block_bytes
    plan = plan_blocks(sizes, available=sum(sizes) - 3 * max(sizes))
    assert plan.streamed and plan.resident
    streamer.apply(plan)
    with torch.no_grad():
        for _ in range(3):  # passes wrap around the prefetch cycle
            got = root(x)
            assert torch.equal(got, want)
    assert streamer.copied_bytes >= 3 * plan.streamed_bytes
    streamer.release_slots()
    with torch.no_grad():
        assert torch.equal(root(x), want)
    # Back to all resident (what reduce_memory's opposite would do) keeps the weights intact.
    streamer.apply(plan_blocks(sizes, available=10**9))
    with torch.no_grad():
        assert torch.equal(root(x), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_matmul_choice_is_measured_and_accurate() -> None:
    from engine.fp8_linear import MatmulMode, choose_matmul

    choice = choose_matmul(torch.device("cuda:0"))
    assert choice.mode in choice.milliseconds
    if torch.cuda.get_device_capability(0) >= (8, 9):
        assert choice.errors[MatmulMode.FP8_ROWWISE] < 0.08
