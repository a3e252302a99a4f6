"""The worker's `GenerationRequest` for a stored `ImageRequest`: the one place storage's request type
meets the worker's, shared by the claim loop and `majicbot generate` (which must not import the queue).

An input image (stored as a PNG with the job, or a file for `majicbot generate`) is decoded and resized
to the request's size here, in the parent, so the worker receives exactly the pixels it starts from: an
upscale's 2x resize happens here, and the same stored image always gives the same pixels.
"""

from __future__ import annotations

import io

from engine.errors import InputImageUnreadable
from engine.messages import GenerationRequest, RawImage
from storage.jobs import ImageRequest


def input_pixels(image_file: bytes, width: int, height: int) -> RawImage:
    """An image file's pixels as RGB at width x height (Lanczos; CPU-bound: call it in a thread)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image_file)) as opened:
            rgb = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputImageUnreadable(f"The input image cannot be read: {exc}.") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return RawImage("RGB", width, height, rgb.tobytes())


def generation_request(r: ImageRequest, input_image: bytes | None = None) -> GenerationRequest:
    """What the worker is asked to draw for a stored request (and its input image file, if any).

    Decoding an input image is CPU-bound: with one, call this in a thread. Raises InputImageUnreadable.
    """
    pixels = None if input_image is None else input_pixels(input_image, r.width, r.height)
    return GenerationRequest(
        prompt=r.prompt,
        negative_prompt=r.negative_prompt,
        seed=r.seed,
        steps=r.steps,
        width=r.width,
        height=r.height,
        guidance=r.guidance,
        count=r.count,
        strength=(r.strength if r.strength is not None else 1.0) if pixels is not None else r.strength,
        input_image=pixels,
    )
