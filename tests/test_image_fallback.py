"""The JPEG that replaces a PNG over an upload limit."""

from __future__ import annotations

import io
import os

from PIL import Image

from bot.image_fallback import jpeg_under


def _noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_the_best_quality_that_fits_is_chosen() -> None:
    png = _noise_png(256)  # noise barely compresses: about 200 KB
    roomy = await jpeg_under(png, len(png))
    tight = await jpeg_under(png, len(png) // 4)
    assert roomy[:2] == tight[:2] == b"\xff\xd8"  # JPEG
    assert len(tight) <= len(png) // 4 < len(roomy)
    with Image.open(io.BytesIO(tight)) as image:
        assert image.size == (256, 256)
