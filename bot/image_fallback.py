"""When a PNG is over a platform's upload limit: the best-quality JPEG that fits instead."""

from __future__ import annotations

import asyncio
import io

JPEG_QUALITIES = (95, 90, 85, 75, 60, 40)


def _jpeg_under(png: bytes, limit: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
    data = b""
    for quality in JPEG_QUALITIES:
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=quality, optimize=True)
        data = buffer.getvalue()
        if len(data) <= limit:
            break
    return data


async def jpeg_under(png: bytes, limit: int) -> bytes:
    """The image as the best-quality JPEG of at most `limit` bytes (or the smallest tried), off the loop."""
    return await asyncio.to_thread(_jpeg_under, png, limit)
