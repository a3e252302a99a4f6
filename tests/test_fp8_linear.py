"""engine.fp8_linear on the CPU (torch._scaled_mm has a CPU implementation): padding of odd row counts,
accuracy and determinism of every fp8 mode, the quantiser, the mode names in the strategy text, and the
`engine.matmul` setting (bf16 unless fp8 is asked for and the GPU has it)."""

from __future__ import annotations

import pytest
import torch

from engine.fp8_linear import (
    FP8,
    FP8_DEFAULT,
    Fp8Linear,
    MatmulMode,
    convert_linears,
    fp8_matmul,
    matmul_mode,
    quantise,
    scaled_fp8,
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


FP8_MODES = [
    MatmulMode(fp8=True, rowwise=rowwise, fast_accum=fast)
    for rowwise in (False, True)
    for fast in (False, True)
]


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


def test_an_all_zero_input_quantises_to_zeros_not_nans() -> None:
    x = torch.zeros((16, 64), dtype=torch.bfloat16)
    for rowwise in (False, True):
        q, s = quantise(x, rowwise)
        assert not torch.isnan(q.float()).any() and float(s.min()) > 0


def test_mode_names_say_what_runs() -> None:
    assert str(MatmulMode.BF16) == "bf16 matmul"
    assert str(MatmulMode.FP8_TENSORWISE) == "fp8 tensor-wise matmul"  # as in earlier strategy texts
    assert f"{FP8_DEFAULT}" == "fp8 tensor-wise matmul, fast accumulation"


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


def test_the_setting_picks_the_mode_and_bf16_is_the_default() -> None:
    cpu = torch.device("cpu")
    assert matmul_mode("bf16", cpu) == MatmulMode.BF16
    assert matmul_mode("fp8", cpu) == MatmulMode.BF16  # no fp8 matmuls here: bf16, with a warning
    from engine.settings import EngineSettings

    assert EngineSettings().matmul == "bf16"


def test_bf16_mode_computes_exactly_as_a_bf16_linear() -> None:
    """What makes the default engine bit-identical to DiffSynth's pipeline on the same weights."""
    x, w, b = _layer(33)
    linear = torch.nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(w.float())
        linear.bias.copy_(b.float())
        layer = Fp8Linear(linear, torch.bfloat16, MatmulMode.BF16)
        want = F.linear(x, w.to(torch.bfloat16), b)
        assert torch.equal(layer(x), want)


def test_a_scaled_float8_weight_keeps_small_weights_precise() -> None:
    """T5's weights are stored this way: a plain cast sends small weights (|w| < 2**-6) into float8's
    subnormal range; one scale per tensor keeps them in its normal range."""
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn((256, 512), generator=gen) * 0.005).to(torch.bfloat16)
    quantised, scale = scaled_fp8(weight)
    assert quantised.dtype == FP8 and float(quantised.float().abs().max()) == 448.0
    scaled_error = _rel_error(quantised.to(torch.bfloat16) * scale, weight.float())
    plain_error = _rel_error(weight.to(FP8).to(torch.bfloat16), weight.float())
    assert scaled_error < 0.03 and plain_error > 0.1
    zero, tiny_scale = scaled_fp8(torch.zeros(4, 4))
    assert not torch.isnan(zero.float()).any() and tiny_scale > 0
