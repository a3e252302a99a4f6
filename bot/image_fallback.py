"""When a PNG is over a platform's upload limit: the best-quality JPEG that fits instead."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass

from storage.jobs import Job

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


@dataclass(frozen=True, slots=True)
class Upload:
    """A job's picture as it will be uploaded."""

    data: bytes
    filename: str
    note: str | None  # why this is not the original PNG


def upload_name(job: Job, index: int = 0) -> str:
    """The file name (without its extension) image `index` of `job` is posted under: by its number in
    a set, else by its seed."""
    if job.request.count > 1:
        return f"majicbot-{job.id}-{index + 1}"
    return f"majicbot-{job.id}-{job.request.seed}"


async def fit_upload(job: Job, png: bytes, limit: int, index: int = 0) -> Upload:
    """The PNG of image `index` if it is within the platform's `limit` bytes, else the best JPEG under
    it, saying so."""
    name = upload_name(job, index)
    if len(png) <= limit:
        return Upload(png, f"{name}.png", None)
    note = (
        f"The PNG ({len(png) / 2**20:.1f} MiB) is over this chat's upload limit "
        f"({limit / 2**20:.0f} MiB), so this is a high-quality JPEG."
    )
    return Upload(await jpeg_under(png, limit), f"{name}.jpg", note)


async def fit_uploads(job: Job, pngs: Sequence[bytes], limit: int) -> list[Upload]:
    """`fit_upload` for every image of a job, in order."""
    return [await fit_upload(job, png, limit, index) for index, png in enumerate(pngs)]
