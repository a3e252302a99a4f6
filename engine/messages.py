"""The closed set of messages between the claim loop (parent) and the GPU worker process (child).

Plain frozen dataclasses, pickled over a multiprocessing Pipe. Nothing here imports torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

MAX_IMAGES_PER_JOB = 4
SEED_SPACE = 2**32
"""Seeds are 32-bit (the chat side's range): image i of a job uses (seed + i) modulo this."""


@dataclass(frozen=True, slots=True)
class RawImage:
    """Pixels as plain bytes (RGB, row after row), cheap to pickle across the pipe.

    Results: the parent encodes the PNG (0.1-0.5 s of CPU at 1024x1024) while the worker already runs the
    next job, so encoding never keeps the GPU idle. Inputs: the parent decodes and resizes the stored
    image, so the worker gets exactly the pixels it starts from."""

    mode: str
    width: int
    height: int
    pixels: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to make: `count` images with seeds seed, seed + 1, ... Sizes are multiples of 16; the chat
    side validated everything.

    With `input_image` (already `width` x `height`) and `strength` below 1 it is image-to-image: the
    image is encoded and noised to `strength` (0 keeps it, 1 ignores it), and the steps denoise from
    there. Without an input image, or at strength 1, it is text-to-image.
    """

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    count: int = 1
    strength: float | None = None  # denoising strength for input_image; None: text to image
    input_image: RawImage | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_IMAGES_PER_JOB:
            raise ValueError(f"count is {self.count}; a job makes 1 to {MAX_IMAGES_PER_JOB} images")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength is {self.strength}; it must be above 0 and at most 1")
        if self.input_image is not None:
            if (self.input_image.width, self.input_image.height) != (self.width, self.height):
                raise ValueError(
                    f"the input image is {self.input_image.width}x{self.input_image.height}, the request "
                    f"{self.width}x{self.height}; resize it first (engine.stored_request.input_pixels)"
                )
            if self.strength is None:
                raise ValueError("an input image needs a strength")

    @property
    def image_to_image(self) -> bool:
        """Whether the input image matters: at strength 1 it is pure noise, exactly text-to-image."""
        return self.input_image is not None and self.strength is not None and self.strength < 1.0

    @property
    def denoising_strength(self) -> float:
        return self.strength if self.image_to_image and self.strength is not None else 1.0

    @property
    def total_steps(self) -> int:
        """Denoising steps of the whole job (every image), as progress counts them."""
        return self.steps * self.count

    def image_seed(self, index: int) -> int:
        return (self.seed + index) % SEED_SPACE

    def single(self, index: int) -> GenerationRequest:
        """Image `index` of this request on its own: its seed, count 1, the same input."""
        if not 0 <= index < self.count:
            raise IndexError(f"image {index} of a request for {self.count}")
        return replace(self, seed=self.image_seed(index), count=1)


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """GPU memory as torch's caching allocator sees it, in bytes (all 0 without CUDA)."""

    allocated: int
    reserved: int
    peak_reserved: int
    free_on_device: int
    total_on_device: int


# -- parent -> worker ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunJob:
    job_id: int
    request: GenerationRequest
    timeout_s: float


@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: int


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


ToWorker = RunJob | CancelJob | Shutdown


# -- worker -> parent ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerReady:
    backend: str
    model: str
    strategy: str
    device_name: str
    load_seconds: float
    memory: MemoryReport


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """While loading: `done` of `total` units (bytes of weights, or steps of a stage) of `stage`."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class WorkerStartFailed:
    """Loading failed (missing model file, bad backend path, ...): restarting will not help."""

    message: str


@dataclass(frozen=True, slots=True)
class StepProgress:
    job_id: int
    step: int
    total: int


class JobErrorKind(enum.StrEnum):
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"  # refused before its first step: the card cannot hold that size
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class JobSucceeded:
    job_id: int
    images: tuple[RawImage, ...]  # request.count of them, image i made with request.image_seed(i)
    model: str  # the model file names, for the PNG's metadata
    strategy: str  # the memory strategy the image was made with
    seconds: float
    step_seconds: float  # mean wall time of one denoising step (of one image)
    memory: MemoryReport  # after the CUDA cache was cleared
    # time.monotonic() in the worker around the backend call (the clock is system-wide on Linux):
    # the GPU idles from one job's generate_finished to the next one's generate_started.
    generate_started: float
    generate_finished: float


@dataclass(frozen=True, slots=True)
class JobErrored:
    job_id: int
    kind: JobErrorKind
    message: str  # meant for an operator's log; the chat side words it for users
    memory: MemoryReport


FromWorker = WorkerReady | WorkerStartFailed | LoadProgress | StepProgress | JobSucceeded | JobErrored
