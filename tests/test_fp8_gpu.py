"""engine.fp8_linear on a real GPU: the compiled quantisation is accurate, bit-for-bit repeatable, and
compiled once for every shape the DiT uses.

Marked `gpu` (off by default; run on the device with `pytest -m gpu tests/test_fp8_gpu.py`).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability(0) < (8, 9),
        reason="needs a GPU with float8 matmuls",
    ),
]

# (rows, in_features): modulation (1 row, padded), text tokens, image tokens, a single block's proj_out.
SHAPES = [(1, 3072), (512, 3072), (4096, 12288), (4608, 15360)]


@torch.no_grad()
def test_compiled_quantisation_is_accurate_repeatable_and_compiled_once() -> None:
    from torch._dynamo import config as dynamo_config

    from engine.fp8_linear import FP8, compiled_quantiser, quantise_fusable

    quantise = compiled_quantiser()
    assert quantise is not None
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn((32, 256), device="cuda", generator=gen).to(torch.bfloat16)
    for rowwise in (False, True):  # one graph each
        quantise(x, rowwise)
    with dynamo_config.patch(error_on_recompile=True):
        for rows, k in SHAPES:
            rows += -rows % 16
            x = torch.randn((rows, k), device="cuda", generator=gen).to(torch.bfloat16) * 3
            for rowwise in (False, True):
                q, s = quantise(x, rowwise)
                q_ref, s_ref = quantise_fusable(x, rowwise)
                assert q.dtype == FP8 and q.is_contiguous()
                torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
                torch.testing.assert_close(q.float(), q_ref.float(), rtol=0.125, atol=2**-9)
                q2, s2 = quantise(x, rowwise)
                assert torch.equal(q.view(torch.uint8), q2.view(torch.uint8)) and torch.equal(s, s2)


@torch.no_grad()
def test_every_measured_mode_gives_the_same_bits_twice() -> None:
    from engine.fp8_linear import FP8, choose_matmul, compiled_quantiser, fp8_matmul, quantise_eager

    choice = choose_matmul(torch.device("cuda:0"), compiled=True)
    assert choice.mode in choice.milliseconds
    print(choice.summary())
    gen = torch.Generator(device="cuda").manual_seed(1)
    w = (torch.randn((3072, 3072), device="cuda", generator=gen) * 0.02).to(FP8)
    b = torch.zeros(3072, device="cuda", dtype=torch.bfloat16)
    for rows in (1, 4096):
        x = torch.randn((1, rows, 3072), device="cuda", generator=gen).to(torch.bfloat16)
        want = torch.nn.functional.linear(x.float(), w.float(), b.float())
        for mode in choice.milliseconds:
            if not mode.fp8:
                continue
            quantise = compiled_quantiser() if mode.compiled else quantise_eager
            assert quantise is not None
            got = fp8_matmul(x, w, b, torch.bfloat16, mode, quantise)
            assert float((got.float() - want).norm() / want.norm()) < 0.08, mode
            assert torch.equal(got, fp8_matmul(x, w, b, torch.bfloat16, mode, quantise)), mode
