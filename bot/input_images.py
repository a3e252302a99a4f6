"""Image prompts: checking an image a user sent before anything is queued, and the size to draw it at.

The file is checked for its size in bytes first, then for its type and pixel count from its header
alone (so a decompression bomb is refused before it is decoded), then decoded once. What is stored with
the job is a clean RGB PNG of it (EXIF rotation applied, metadata dropped): the engine decodes that one
format, and the same stored image always gives the same pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from bot.command_parser import SIDE_MULTIPLE, fit_to_limits
from bot.errors import InvalidRequest
from bot.settings import LimitsSettings

ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
TARGET_PIXELS = 1024 * 1024  # an image prompt is drawn near one megapixel, at the image's aspect ratio


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An image prompt that passed the checks, re-encoded as PNG."""

    png: bytes = field(repr=False)
    width: int
    height: int


def check_input_image(data: bytes, limits: LimitsSettings) -> CheckedImage:
    """Refuse what is not an image we take, too large a file or too many pixels (InvalidRequest, with
    what to send instead); return the image as a clean PNG. CPU-bound: call it in a thread."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_file_size(len(data), limits)
    names = list(ACCEPTED_FORMATS.values())
    kinds = f"{', '.join(names[:-1])} or {names[-1]}"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ACCEPTED_FORMATS:
                raise InvalidRequest(f"That file is {image.format or 'not an image'}; send a {kinds} image.")
            width, height = image.size
            if width * height > limits.max_input_image_pixels:
                raise InvalidRequest(
                    f"That image is {width}x{height} ({width * height:,} pixels); the limit is "
                    f"{limits.max_input_image_pixels:,} pixels. Send a smaller image."
                )
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidRequest(f"That file is not an image I can read; send a {kinds} image.") from None
    except OSError:
        raise InvalidRequest(
            f"That image is damaged or cut short; send it again as a {kinds} file."
        ) from None
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=6)
    return CheckedImage(png=out.getvalue(), width=rgb.width, height=rgb.height)


def check_file_size(size: int, limits: LimitsSettings) -> None:
    """Refuse an image file of `size` bytes over the limit (before fetching it, where the platform
    says its size)."""
    if size > limits.max_input_image_bytes:
        raise InvalidRequest(
            f"That image is {_size(size)}; the limit is {_size(limits.max_input_image_bytes)}. "
            "Send a smaller file (a screenshot or a compressed JPEG works)."
        )


def size_for_image(width: int, height: int, limits: LimitsSettings) -> tuple[int, int]:
    """The size an image prompt is drawn at: its aspect ratio near one megapixel (less where the limits
    say so), sides multiples of 16 (an extreme ratio is clamped to the smallest side allowed)."""
    scale = min(
        (TARGET_PIXELS / (width * height)) ** 0.5,
        limits.max_side / max(width, height),
        (limits.max_pixels / (width * height)) ** 0.5,
    )
    low = -(-limits.min_side // SIDE_MULTIPLE) * SIDE_MULTIPLE
    rounded = [max(low, round(side * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE) for side in (width, height)]
    if max(rounded) <= limits.max_side and rounded[0] * rounded[1] <= limits.max_pixels:
        return rounded[0], rounded[1]
    floored = [max(low, int(side * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE) for side in (width, height)]
    return fit_to_limits(floored[0], floored[1], limits)


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"
