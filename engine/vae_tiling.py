"""Decoding a latent in overlapping tiles, so that large images fit the GPU memory the DiT leaves.

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
    if plan.tile is None:
        return decode(latents)
    _, _, height, width = latents.shape
    tile, overlap = plan.tile, plan.overlap
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out: torch.Tensor | None = None
    total = torch.zeros(
        (height * LATENT_SCALE, width * LATENT_SCALE), dtype=torch.float32, device=latents.device
    )
    for yi, y0 in enumerate(ys):
        th = min(tile, height)
        for xi, x0 in enumerate(xs):
            tw = min(tile, width)
            pixels = decode(latents[:, :, y0 : y0 + th, x0 : x0 + tw]).float()
            if out is None:
                out = torch.zeros(
                    (pixels.shape[0], pixels.shape[1], height * LATENT_SCALE, width * LATENT_SCALE),
                    dtype=torch.float32,
                    device=latents.device,
                )
            # Fade only towards a neighbour, over the part both tiles cover.
            fade_top = (ys[yi - 1] + th - y0) * LATENT_SCALE if yi > 0 else 0
            fade_bottom = (y0 + th - ys[yi + 1]) * LATENT_SCALE if yi + 1 < len(ys) else 0
            fade_left = (xs[xi - 1] + tw - x0) * LATENT_SCALE if xi > 0 else 0
            fade_right = (x0 + tw - xs[xi + 1]) * LATENT_SCALE if xi + 1 < len(xs) else 0
            weight = torch.outer(
                _ramp(th * LATENT_SCALE, fade_top, fade_bottom),
                _ramp(tw * LATENT_SCALE, fade_left, fade_right),
            ).to(latents.device)
            rows = slice(y0 * LATENT_SCALE, (y0 + th) * LATENT_SCALE)
            cols = slice(x0 * LATENT_SCALE, (x0 + tw) * LATENT_SCALE)
            out[:, :, rows, cols] += pixels * weight
            total[rows, cols] += weight
            del pixels
    assert out is not None
    return (out / total).to(latents.dtype)
