"""The closed set of messages between the claim loop (parent) and the GPU worker process (child).

Plain frozen dataclasses, pickled over a multiprocessing Pipe. Nothing here imports torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One image to make. Sizes are multiples of 16; the chat side validated everything."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    width: int
    height: int
    guidance: float


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
class RawImage:
    """Pixels as the backend made them. The parent encodes the PNG (0.1-0.5 s of CPU at 1024x1024) while
    the worker already runs the next job, so encoding never keeps the GPU idle."""

    mode: str
    width: int
    height: int
    pixels: bytes


@dataclass(frozen=True, slots=True)
class JobSucceeded:
    job_id: int
    image: RawImage
    model: str  # the model file names, for the PNG's metadata
    strategy: str  # the memory strategy the image was made with
    seconds: float
    step_seconds: float  # mean wall time of one denoising step
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
