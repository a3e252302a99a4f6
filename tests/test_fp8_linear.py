"""engine.fp8_linear on the CPU (torch._scaled_mm has a CPU implementation): padding of odd row counts,
accuracy and determinism of every fp8 mode, the quantisers, and the mode names in the strategy text.

The compiled quantisation is checked on the CPU in a `slow` test (it runs a C++ compiler) and on the
GPU in `tests/test_fp8_gpu.py`.
"""

from __future__ import annotations

import pytest
import torch

from engine.fp8_linear import (
    FP8,
    Fp8Linear,
    MatmulMode,
    candidate_modes,
    choose_matmul,
    convert_linears,
    fp8_matmul,
    quantise_eager,
    quantise_fusable,
)

F = torch.nn.functional


def _layer(rows: int, k: int = 64, n: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn((rows, k), generator=gen).to(torch.bfloat16)
    w = (torch.randn((n, k), generator=gen) * 0.02).to(FP8)
    b = (torch.randn((n,), generator=gen) * 0.02).to(torch.bfloat16)
    return x, w, b


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


FP8_MODES = [m for m in candidate_modes(compiled=True) if m.fp8]


@pytest.mark.parametrize("mode", FP8_MODES, ids=str)
@pytest.mark.parametrize("rows", [1, 5, 16, 33])
def test_every_fp8_mode_is_accurate_and_deterministic_for_any_row_count(mode: MatmulMode, rows: int) -> None:
    x, w, b = _layer(rows)
    want = F.linear(x.float(), w.float(), b.float())
    got = fp8_matmul(x, w, b, torch.bfloat16, mode)
    assert got.shape == (rows, 48) and got.dtype == torch.bfloat16
    assert _rel_error(got, want) < 0.05
    assert torch.equal(got, fp8_matmul(x, w, b, torch.bfloat16, mode))


def test_padding_rows_does_not_change_a_row_wise_result() -> None:
    """A row's scale is its own, so the padded single row equals that row computed among others."""
    x, w, b = _layer(32)
    alone = fp8_matmul(x[:1], w, b, torch.bfloat16, MatmulMode.FP8_ROWWISE)
    among = fp8_matmul(x, w, b, torch.bfloat16, MatmulMode.FP8_ROWWISE)
    assert torch.equal(alone, among[:1])


def test_leading_dimensions_are_kept() -> None:
    x, w, b = _layer(6)
    x3 = x.reshape(2, 3, 64)
    got = fp8_matmul(x3, w, b, torch.bfloat16, MatmulMode.FP8_TENSORWISE)
    assert got.shape == (2, 3, 48)
    assert torch.equal(got.reshape(6, 48), fp8_matmul(x, w, b, torch.bfloat16, MatmulMode.FP8_TENSORWISE))


@pytest.mark.parametrize("rowwise", [False, True])
def test_the_fusable_quantisation_matches_the_eager_one(rowwise: bool) -> None:
    x, _, _ = _layer(32, k=256)
    q1, s1 = quantise_eager(x, rowwise)
    q2, s2 = quantise_fusable(x, rowwise)
    assert q1.dtype == q2.dtype == FP8 and s1.dtype == s2.dtype == torch.float32
    assert s1.shape == s2.shape == ((32, 1) if rowwise else ())
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=0)
    # Both use the whole float8 range and agree to within one float8 step (3 mantissa bits; the eager
    # one rounds to bf16 first).
    assert float(q2.float().abs().max()) == 448.0
    torch.testing.assert_close(q1.float(), q2.float(), rtol=0.125, atol=2**-9)


def test_an_all_zero_input_quantises_to_zeros_not_nans() -> None:
    x = torch.zeros((16, 64), dtype=torch.bfloat16)
    for quantise in (quantise_eager, quantise_fusable):
        q, s = quantise(x, False)
        assert not torch.isnan(q.float()).any() and float(s) > 0


def test_mode_names_say_what_runs() -> None:
    assert str(MatmulMode.BF16) == "bf16 matmul"
    assert str(MatmulMode.FP8_TENSORWISE) == "fp8 tensor-wise matmul"  # as in earlier strategy texts
    mode = MatmulMode(fp8=True, rowwise=True, compiled=True, fast_accum=True)
    assert f"{mode}" == "fp8 row-wise matmul, compiled quantisation, fast accumulation"
    modes = candidate_modes()
    assert len(set(modes)) == len(modes) == 5 and modes[-1] == MatmulMode.BF16
    assert not any(m.compiled for m in modes)  # opt-in: see the module's docstring
    with_compiled = candidate_modes(compiled=True)
    assert len(set(with_compiled)) == 9 and set(modes) < set(with_compiled)


def test_layers_that_cannot_use_fp8_matmuls_fall_back_to_bf16() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Linear(64, 48), torch.nn.LayerNorm(48))
    assert convert_linears(net, torch.bfloat16, MatmulMode.FP8_TENSORWISE) == 2
    odd, even = net[0], net[1]
    assert isinstance(odd, Fp8Linear) and odd.mode == MatmulMode.BF16  # 20 is no multiple of 16
    assert isinstance(even, Fp8Linear) and even.mode == MatmulMode.FP8_TENSORWISE
    assert net[2].weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = net(torch.randn(3, 20))
    assert out.shape == (3, 48) and out.dtype == torch.bfloat16


def test_without_an_fp8_gpu_the_choice_is_bf16_unmeasured() -> None:
    choice = choose_matmul(torch.device("cpu"))
    assert choice.mode == MatmulMode.BF16 and not choice.milliseconds
    assert choice.summary().startswith("bf16 matmul")


@pytest.mark.slow
@pytest.mark.parametrize("rowwise", [False, True])
def test_the_compiled_quantisation_on_the_cpu(rowwise: bool) -> None:
    from engine.fp8_linear import compiled_quantiser

    quantise = compiled_quantiser()
    assert quantise is not None
    with torch.no_grad():
        for rows in (16, 48):  # one compilation serves both sizes (dynamic)
            x, _, _ = _layer(rows, k=128)
            q, s = quantise(x, rowwise)
            q_ref, s_ref = quantise_fusable(x, rowwise)
            torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
            torch.testing.assert_close(q.float(), q_ref.float(), rtol=0.125, atol=2**-9)
            q2, _ = quantise(x, rowwise)
            assert torch.equal(q.view(torch.uint8), q2.view(torch.uint8))
