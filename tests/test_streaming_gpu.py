"""The memory engine's parts on a real GPU: streamed and converted blocks give exactly the resident result,
blocks move one at a time when the plan changes, the fp8 mode is deterministic, and the lean DiT block
forwards equal DiffSynth's own.

Marked `gpu` (off by default; run on the device with `pytest -m gpu tests/test_streaming_gpu.py`).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _net(convert_weights: bool) -> tuple[object, list[object], object]:
    from engine.fp8_linear import FP8, MatmulMode, convert_linears

    torch.manual_seed(0)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.LayerNorm(256))
        for _ in range(7)
    ]
    root = torch.nn.Sequential(*blocks)
    if convert_weights:  # T5's way: plain linears, weights stored in float8 and computed in bf16
        root = root.to(torch.bfloat16)

        def rule(module: object, name: str, tensor: object) -> tuple[object, object]:
            if isinstance(module, torch.nn.Linear) and name == "weight":
                return FP8, torch.bfloat16
            return torch.bfloat16, torch.bfloat16
    else:  # the DiT's way: Fp8Linear converts per call
        convert_linears(root, torch.bfloat16, MatmulMode.BF16)

        def rule(module: object, name: str, tensor: object) -> tuple[object, object]:
            dtype = FP8 if name == "weight" and tensor.dtype == FP8 else torch.bfloat16  # type: ignore[attr-defined]
            return dtype, dtype

    return root, blocks, rule


@pytest.mark.parametrize("convert_weights", [False, True])
@pytest.mark.parametrize("wrap", [True, False])
def test_streamed_equals_resident(wrap: bool, convert_weights: bool) -> None:
    from engine.layer_streaming import StreamedBlocks, place_outside_blocks, storage_view
    from engine.vram_plan import plan_blocks

    device = torch.device("cuda:0")
    root, blocks, rule = _net(convert_weights)
    originals = {
        id(m): {
            n: t.detach().clone() for n, t in [*m._parameters.items(), *m._buffers.items()] if t is not None
        }
        for m in root.modules()
    }
    place_outside_blocks(root, blocks, device, rule, lambda name, old, new: new.copy_(old))
    streamer = StreamedBlocks(blocks, device, "toy", rule, wrap=wrap)

    def fill(index: int, placed: list[object], buffer: object) -> None:
        for p in placed:
            storage_view(buffer, p).copy_(originals[id(p.module)][p.name])  # type: ignore[arg-type,attr-defined]

    everything = plan_blocks(streamer.block_bytes, available=10**9)
    streamer.load(everything, fill)
    x = torch.randn(64, 256, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        want = root(x).clone()
    sizes = streamer.block_bytes
    plan = plan_blocks(sizes, available=sum(sizes) - 3 * max(sizes))
    assert plan.streamed and plan.resident
    streamer.apply(plan)  # blocks move to page-locked host memory one at a time
    assert streamer.host_bytes == plan.streamed_bytes
    with torch.no_grad():
        for _ in range(3):  # passes wrap around the prefetch cycle
            assert torch.equal(root(x), want)
    assert streamer.copied_bytes >= 3 * plan.streamed_bytes
    streamer.release_slots()
    with torch.no_grad():
        assert torch.equal(root(x), want)
    streamer.apply(everything)  # the smaller plan given up again: the weights are intact
    assert streamer.host_bytes == 0
    with torch.no_grad():
        assert torch.equal(root(x), want)
    # Loading straight into a streamed placement gives the same result too.
    root2, blocks2, _ = _net(convert_weights)
    place_outside_blocks(root2, blocks2, device, rule, lambda name, old, new: new.copy_(old))
    streamer2 = StreamedBlocks(blocks2, device, "toy2", rule, wrap=wrap)

    def copy_from_first(index: int, placed: list[object], buffer: object) -> None:
        home = streamer._gpu[index] if streamer._gpu[index] is not None else streamer._host[index]
        buffer.copy_(home)  # type: ignore[attr-defined]

    streamer2.load(plan, copy_from_first)
    with torch.no_grad():
        assert torch.equal(root2(x), want)


def test_the_fp8_mode_is_repeatable_and_close() -> None:
    from engine.fp8_linear import FP8, FP8_DEFAULT, fp8_matmul

    if torch.cuda.get_device_capability(0) < (8, 9):
        pytest.skip("needs float8 matmuls")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows, k in [(1, 3072), (512, 3072), (4608, 15360)]:
        x = torch.randn((rows, k), device="cuda", generator=gen).to(torch.bfloat16)
        w = (torch.randn((3072, k), device="cuda", generator=gen) * 0.02).to(FP8)
        want = torch.nn.functional.linear(x.float(), w.float())
        got = fp8_matmul(x, w, None, torch.bfloat16, FP8_DEFAULT)
        assert torch.equal(got, fp8_matmul(x, w, None, torch.bfloat16, FP8_DEFAULT))
        assert float((got.float() - want).norm() / want.norm()) < 0.08


def test_lean_block_forwards_equal_diffsynths() -> None:
    flux_dit = pytest.importorskip("diffsynth.models.flux_dit")
    from engine.lean_blocks import double_block_forward, single_block_forward

    torch.manual_seed(0)
    dim, heads = 3072, 24
    single = flux_dit.FluxSingleTransformerBlock(dim, heads).cuda().to(torch.bfloat16)
    double = flux_dit.FluxJointTransformerBlock(dim, heads).cuda().to(torch.bfloat16)
    image, text = 1024, 512
    a = torch.randn(1, image, dim, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(1, text, dim, device="cuda", dtype=torch.bfloat16)
    temb = torch.randn(1, dim, device="cuda", dtype=torch.bfloat16)
    rope = torch.randn(1, 1, image + text, 64, 2, 2, device="cuda")
    with torch.no_grad():
        ra, rb = double(a, b, temb, rope)
        ga, gb = double_block_forward(double, a, b, temb, rope, chunk=256)
        torch.testing.assert_close(ga, ra, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(gb, rb, rtol=2e-2, atol=2e-2)
        x = torch.cat([b, a], dim=1)
        want = single(x, b, temb, rope)[0]
        got = single_block_forward(single, x, temb, rope, chunk=256)
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
        assert torch.equal(single_block_forward(single, x, temb, rope, chunk=10**6), want)  # one chunk: exact


def test_scaled_float8_weights_are_converted_with_their_scale() -> None:
    from engine.fp8_linear import FP8, scaled_fp8
    from engine.layer_streaming import StreamedBlocks, place_outside_blocks, storage_view
    from engine.vram_plan import plan_blocks

    device = torch.device("cuda:0")
    torch.manual_seed(1)
    blocks = [torch.nn.Linear(128, 128, bias=False).to(torch.bfloat16) for _ in range(3)]
    root = torch.nn.Sequential(*blocks)
    weights = [(b.weight.detach().float() * 0.05).to(torch.bfloat16) for b in blocks]

    def rule(module: object, name: str, tensor: object) -> tuple[object, object]:
        return FP8, torch.bfloat16

    place_outside_blocks(root, blocks, device, rule, lambda name, old, new: new.copy_(old))
    streamer = StreamedBlocks(blocks, device, "scaled", rule, wrap=False)
    expected = []

    def fill(index: int, placed: list[object], buffer: object) -> None:
        quantised, scale = scaled_fp8(weights[index])
        storage_view(buffer, placed[0]).copy_(quantised)  # type: ignore[arg-type]
        streamer.set_scale(index, 0, scale)
        expected.append(quantised.to(torch.bfloat16) * scale)

    sizes = [128 * 128] * 3
    streamer.load(plan_blocks(sizes, available=sizes[0] * 2 + 10), fill)
    x = torch.randn(8, 128, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        got = root(x)
        want = x
        for w in expected:
            want = torch.nn.functional.linear(want, w.to(device))
    assert torch.equal(got, want)
