"""The JPEG that replaces a PNG over an upload limit."""

from __future__ import annotations

import dataclasses
import io
import os

from PIL import Image

from bot.image_fallback import fit_upload, jpeg_under, upload_name
from tests.test_texts import make_job


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


async def test_uploads_are_named_by_seed_or_by_their_number_in_a_set() -> None:
    single = make_job()
    several = make_job(request=dataclasses.replace(single.request, count=4))
    assert upload_name(single) == "majicbot-12-42"
    assert [upload_name(several, index) for index in (0, 3)] == ["majicbot-12-1", "majicbot-12-4"]
    assert (await fit_upload(several, b"png", 10, 2)).filename == "majicbot-12-3.png"
