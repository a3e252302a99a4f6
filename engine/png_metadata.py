"""The PNG a job produces, with how it was made written into text chunks.

Anyone holding the file can see the prompt, seed and settings that reproduce it (as `majicbot generate`
flags). Encoding is deterministic: the same image and metadata give the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from engine.messages import GenerationRequest, JobSucceeded

if TYPE_CHECKING:
    from PIL.Image import Image


def majicbot_version() -> str:
    try:
        return version("majicbot")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class PngMetadata:
    """What goes into the PNG's text chunks: the request that reproduces the image, and how it was made.

    `request` is this one image's (its own seed, count 1, without the input image's pixels; its strength
    stays); `source_job` is the job whose picture it started from (vary, upscale), if any.
    """

    request: GenerationRequest
    model: str  # the model file names
    strategy: str  # the memory strategy the image was made with
    version: str
    image_index: int = 0
    image_count: int = 1
    source_job: int | None = None

    @classmethod
    def for_request(
        cls,
        request: GenerationRequest,
        *,
        model: str,
        strategy: str,
        index: int = 0,
        source_job: int | None = None,
    ) -> PngMetadata:
        """The metadata of image `index` of `request`."""
        return cls(
            request=replace(request.single(index), input_image=None),
            model=model,
            strategy=strategy,
            version=majicbot_version(),
            image_index=index,
            image_count=request.count,
            source_job=source_job,
        )

    def chunks(self) -> tuple[tuple[str, str], ...]:
        """(keyword, text) pairs in a fixed order."""
        request = self.request
        chunks = [
            ("prompt", request.prompt),
            ("negative_prompt", request.negative_prompt),
            ("seed", str(request.seed)),
            ("steps", str(request.steps)),
            ("size", f"{request.width}x{request.height}"),
            ("guidance", repr(request.guidance)),
            ("image", f"{self.image_index + 1} of {self.image_count}"),
        ]
        if request.strength is not None:
            chunks.append(("strength", repr(request.strength)))
        if self.source_job is not None:
            chunks.append(("source_job", str(self.source_job)))
        chunks += [
            ("model", self.model),
            ("memory_strategy", self.strategy),
            ("Software", f"majicbot {self.version}"),
        ]
        return tuple(chunks)

    @classmethod
    def from_chunks(cls, text: dict[str, str]) -> PngMetadata:
        """Parse what `chunks` wrote; raises KeyError or ValueError for a PNG majicbot did not write."""
        width, _, height = text["size"].partition("x")
        request = GenerationRequest(
            prompt=text["prompt"],
            negative_prompt=text["negative_prompt"],
            seed=int(text["seed"]),
            steps=int(text["steps"]),
            width=int(width),
            height=int(height),
            guidance=float(text["guidance"]),
            strength=float(text["strength"]) if "strength" in text else None,
        )
        # Older PNGs have no image, strength or source_job chunks: one image made from text.
        number, _, count = text.get("image", "1 of 1").partition(" of ")
        return cls(
            request=request,
            model=text["model"],
            strategy=text["memory_strategy"],
            version=text["Software"].removeprefix("majicbot "),
            image_index=int(number) - 1,
            image_count=int(count),
            source_job=int(text["source_job"]) if "source_job" in text else None,
        )


def encode_png(image: Image, metadata: PngMetadata) -> bytes:
    """The image as PNG bytes with the metadata as text chunks (iTXt where the text is not Latin-1).

    CPU-bound (about 0.1-0.5 s at 1024x1024): call it in a thread, never in the event loop.
    """
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for keyword, text in metadata.chunks():
        info.add_text(keyword, text)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", pnginfo=info, compress_level=6)
    return buffer.getvalue()


def encode_result(
    request: GenerationRequest, result: JobSucceeded, *, source_job: int | None = None
) -> list[bytes]:
    """The PNGs of a finished job, in image order: the worker's pixels with each image's request (its
    seed), its place in the set, the source job and the worker's metadata.

    CPU-bound like `encode_png`: run it in a thread.
    """
    from PIL import Image

    pngs = []
    for index, raw in enumerate(result.images):
        image = Image.frombytes(raw.mode, (raw.width, raw.height), raw.pixels)
        metadata = PngMetadata.for_request(
            request, model=result.model, strategy=result.strategy, index=index, source_job=source_job
        )
        pngs.append(encode_png(image, metadata))
    return pngs


def read_metadata(png: bytes) -> PngMetadata:
    """The metadata `encode_png` wrote (for tests and tools reading a saved PNG)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        text = dict(getattr(image, "text", {}))
    return PngMetadata.from_chunks(text)
