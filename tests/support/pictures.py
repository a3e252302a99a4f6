"""Small pictures for image-prompt tests, and how close two pictures are (the tiny backend blends its
pattern over the input image by the strength, so a result stays close to the image it started from)."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops, ImageStat


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def noise_png(size: tuple[int, int], seed: int = 1) -> bytes:
    """Random pixels: a PNG that does not compress (for file-size limits)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def distance(a: bytes, b: bytes) -> float:
    """Mean absolute pixel difference (0-255) of two pictures, `b` resized to `a`'s size."""
    with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
        left = first.convert("RGB")
        right = second.convert("RGB").resize(left.size)
    return sum(ImageStat.Stat(ImageChops.difference(left, right)).mean) / 3


def mean_colour(png: bytes) -> tuple[float, float, float]:
    with Image.open(io.BytesIO(png)) as image:
        red, green, blue = ImageStat.Stat(image.convert("RGB")).mean
    return red, green, blue


def closest(png: bytes, candidates: list[bytes]) -> int:
    """The index of the candidate `png` is closest to."""
    return min(range(len(candidates)), key=lambda index: distance(png, candidates[index]))
