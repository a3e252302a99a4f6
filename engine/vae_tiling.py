"""Decoding a latent, or encoding an image, in overlapping tiles, so that large images fit the GPU memory
the DiT leaves.

Each tile is decoded on its own; where tiles overlap, their pixels are blended with linear ramps, so no
seam shows. Tiles that would run past an edge are moved back inside it (the last tile of a row ends at
the edge), so every size, not only multiples of the tile, is covered. Imports torch: worker process only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.memory_model import LATENT_SCALE, DecodePlan


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering `length`, neighbours overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Weights along one axis of a tile: rising over `fade_in`, 1 in the middle, falling over `fade_out`."""
    weights = torch.ones(size, dtype=torch.float32)
    if fade_in:
        weights[:fade_in] = torch.arange(1, fade_in + 1, dtype=torch.float32) / (fade_in + 1)
    if fade_out:
        weights[size - fade_out :] = torch.arange(fade_out, 0, -1, dtype=torch.float32) / (fade_out + 1)
    return weights


def decode_tiled(
    decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, plan: DecodePlan
) -> torch.Tensor:
    """`decode` (latent (B, C, h, w) -> image (B, 3, 8h, 8w)) applied tile by tile and blended."""
    return _tiled(decode, latents, plan, in_scale=1, out_scale=LATENT_SCALE)


def encode_tiled(
    encode: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, plan: DecodePlan
) -> torch.Tensor:
    """`encode` (image (B, 3, 8h, 8w) -> latent (B, C, h, w)) applied tile by tile and blended.

    The plan's tiles are in latent pixels (x8 image pixels), as for decoding; the image's sides must be
    multiples of 8 (requests are multiples of 16)."""
    return _tiled(encode, pixels, plan, in_scale=LATENT_SCALE, out_scale=1)


def _tiled(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    plan: DecodePlan,
    *,
    in_scale: int,
    out_scale: int,
) -> torch.Tensor:
    """`run` over overlapping tiles of `x`, blended. Positions are counted in latent pixels: a latent
    pixel is `in_scale` pixels of `x` and `out_scale` pixels of the output."""
    if plan.tile is None:
        return run(x)
    _, _, in_height, in_width = x.shape
    height, width = in_height // in_scale, in_width // in_scale
    tile, overlap = plan.tile, plan.overlap
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out: torch.Tensor | None = None
    total = torch.zeros((height * out_scale, width * out_scale), dtype=torch.float32, device=x.device)
    th, tw = min(tile, height), min(tile, width)
    for yi, y0 in enumerate(ys):
        for xi, x0 in enumerate(xs):
            part = x[:, :, y0 * in_scale : (y0 + th) * in_scale, x0 * in_scale : (x0 + tw) * in_scale]
            result = run(part).float()
            if out is None:
                out = torch.zeros(
                    (result.shape[0], result.shape[1], height * out_scale, width * out_scale),
                    dtype=torch.float32,
                    device=x.device,
                )
            # Fade only towards a neighbour, over the part both tiles cover.
            fade_top = (ys[yi - 1] + th - y0) * out_scale if yi > 0 else 0
            fade_bottom = (y0 + th - ys[yi + 1]) * out_scale if yi + 1 < len(ys) else 0
            fade_left = (xs[xi - 1] + tw - x0) * out_scale if xi > 0 else 0
            fade_right = (x0 + tw - xs[xi + 1]) * out_scale if xi + 1 < len(xs) else 0
            weight = torch.outer(
                _ramp(th * out_scale, fade_top, fade_bottom),
                _ramp(tw * out_scale, fade_left, fade_right),
            ).to(x.device)
            rows = slice(y0 * out_scale, (y0 + th) * out_scale)
            cols = slice(x0 * out_scale, (x0 + tw) * out_scale)
            out[:, :, rows, cols] += result * weight
            total[rows, cols] += weight
            del result
    assert out is not None
    return (out / total).to(x.dtype)
