"""The worker process: owns the GPU, loads the backend once and runs jobs one at a time.

Started by `WorkerSupervisor` with multiprocessing's spawn method (never fork: CUDA does not survive
it). The conversation over two one-way pipes, in `engine.messages` types:

    worker -> parent   WorkerReady | WorkerStartFailed        once, after loading
    parent -> worker   RunJob                                  one at a time
    worker -> parent   StepProgress ... then JobSucceeded | JobErrored
    parent -> worker   CancelJob | Shutdown                    at any time (read by a thread)

A job stops between steps when it is cancelled, when it passes its deadline, or at shutdown: the
backend's `on_step` raises. After every job the CUDA cache is cleared and the memory left is reported.
Imports neither storage nor bot; torch arrives only with the backend.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from engine.backend import Backend, load_backend
from engine.errors import EngineStartError, RequestTooLarge
from engine.gpu_memory import device_name, free_cached_memory, reset_peak
from engine.messages import (
    CancelJob,
    FromWorker,
    JobErrored,
    JobErrorKind,
    JobSucceeded,
    LoadProgress,
    RawImage,
    RunJob,
    Shutdown,
    StepProgress,
    WorkerReady,
    WorkerStartFailed,
)
from engine.settings import EngineSettings

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
DOWNLOAD_HINT = "Run `majicbot download` to fetch the model files, or point engine.model_dir at them."


def worker_main(settings: EngineSettings, commands: Connection, events: Connection, log_level: int) -> None:
    """The spawned process's entry point: load, report, then serve jobs until Shutdown."""
    # Ctrl+C reaches the whole process group; the parent decides when the worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    outbox = _Outbox(events)
    backend = _load(settings, outbox)
    if backend is None:
        return
    inbox = _Inbox(commands)
    runner = _JobRunner(settings, backend, inbox, outbox)
    while (job := inbox.next_job()) is not None:
        runner.run(job)
    logger.info("worker stopping")


def _load(settings: EngineSettings, outbox: _Outbox) -> Backend | None:
    """Build the backend and report readiness, or report why it could not be built."""
    started = time.monotonic()

    def report(stage: str, done: int, total: int) -> None:
        outbox.send(LoadProgress(stage, done, total))

    try:
        backend = load_backend(settings, report)
    except EngineStartError as exc:
        outbox.send(WorkerStartFailed(str(exc)))
        return None
    except Exception as exc:
        logger.exception("the %s backend failed to load", settings.backend)
        message = f"The {settings.backend!r} backend could not load: {exc}"
        if isinstance(exc, FileNotFoundError) and "majicbot download" not in message:
            message = f"{message} {DOWNLOAD_HINT}"
        outbox.send(WorkerStartFailed(message))
        return None
    model, strategy = _describe(backend)
    ready = WorkerReady(
        backend=settings.backend,
        model=model,
        strategy=strategy,
        device_name=device_name(settings.device),
        load_seconds=time.monotonic() - started,
        memory=free_cached_memory(settings.device),
    )
    logger.info("backend %s ready in %.1f s (%s, %s)", settings.backend, ready.load_seconds, model, strategy)
    outbox.send(ready)
    return backend


def _describe(backend: Backend) -> tuple[str, str]:
    describe = getattr(backend, "describe", None)
    if callable(describe):
        model, strategy = describe()
        return str(model), str(strategy)
    return type(backend).__name__, "default"


class _Outbox:
    """Sends to the parent; a parent that went away ends this process (nobody is left to answer)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, message: FromWorker) -> None:
        try:
            with self._lock:
                self._connection.send(message)
        except OSError:
            logger.warning("the parent process is gone; worker exiting")
            os._exit(0)


class _Inbox:
    """Reads the parent's messages on a thread, so a cancel arrives while the main thread computes."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._jobs: queue.SimpleQueue[RunJob | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cancelled: set[int] = set()
        self._stopping = False
        threading.Thread(target=self._read, name="worker-inbox", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                logger.warning("the parent process is gone; stopping after the current step")
                message = Shutdown()
            if isinstance(message, CancelJob):
                with self._lock:
                    self._cancelled.add(message.job_id)
            elif isinstance(message, RunJob):
                self._jobs.put(message)
            else:
                with self._lock:
                    self._stopping = True
                self._jobs.put(None)
                return

    def next_job(self) -> RunJob | None:
        """The next job to run; None once the worker should stop."""
        job = self._jobs.get()
        with self._lock:
            return None if self._stopping else job

    def stop_reason(self, job_id: int) -> str | None:
        """Why this job should stop now, if it should."""
        with self._lock:
            if job_id in self._cancelled:
                return "Cancelled."
            if self._stopping:
                return "Cancelled: the worker is shutting down."
        return None

    def forget(self, job_id: int) -> None:
        with self._lock:
            self._cancelled.discard(job_id)


class _Stopped(Exception):
    """Raised from on_step to end a run early; carries how the job ends."""

    def __init__(self, kind: JobErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class _Made:
    images: tuple[RawImage, ...]
    model: str
    strategy: str
    step_seconds: float
    generate_started: float
    generate_finished: float


@dataclass(frozen=True, slots=True)
class _Failed:
    kind: JobErrorKind
    message: str


class _StepClock:
    """The on_step callback of one job: progress out, cancel and deadline in, step times kept."""

    def __init__(self, job: RunJob, deadline: float, inbox: _Inbox, outbox: _Outbox) -> None:
        self._job = job
        self._deadline = deadline
        self._inbox = inbox
        self._outbox = outbox
        self._times: list[float] = []

    def on_step(self, step: int, total: int) -> None:
        reason = self._inbox.stop_reason(self._job.job_id)
        if reason is not None:
            raise _Stopped(JobErrorKind.CANCELLED, reason)
        now = time.monotonic()
        if now > self._deadline:
            raise _Stopped(
                JobErrorKind.TIMEOUT,
                f"Stopped at step {step} of {total}: the job ran past its {self._job.timeout_s:g} s limit "
                "(engine.job_timeout_s).",
            )
        self._times.append(now)
        self._outbox.send(StepProgress(self._job.job_id, step, total))

    def restart(self) -> None:
        self._times.clear()

    def mean_step_seconds(self, fallback: float) -> float:
        """Mean time between steps; `fallback` when fewer than two steps were seen."""
        if len(self._times) < 2:
            return fallback
        return (self._times[-1] - self._times[0]) / (len(self._times) - 1)


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError / torch.OutOfMemoryError, or any class so named, here or as a cause."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(cls.__name__ == "OutOfMemoryError" for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def _stopped_in(exc: BaseException) -> _Stopped | None:
    """Our own stop, even when a backend wrapped it in an error of its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _Stopped):
            return current
        current = current.__cause__ or current.__context__
    return None


class _JobRunner:
    def __init__(self, settings: EngineSettings, backend: Backend, inbox: _Inbox, outbox: _Outbox) -> None:
        self._device = settings.device
        self._backend = backend
        self._inbox = inbox
        self._outbox = outbox

    def run(self, job: RunJob) -> None:
        """Run one job and send its outcome; memory is freed first, whatever happened."""
        request = job.request
        logger.info(
            "job=%d starting: %d image(s) %dx%d, %d steps, seed %d%s",
            job.job_id,
            request.count,
            request.width,
            request.height,
            request.steps,
            request.seed,
            f", from an image at strength {request.strength:g}" if request.image_to_image else "",
        )
        reset_peak(self._device)
        started = time.monotonic()
        outcome = self._attempt(job, started)
        memory = free_cached_memory(self._device)
        seconds = time.monotonic() - started
        self._inbox.forget(job.job_id)
        if isinstance(outcome, _Made):
            logger.info("job=%d done in %.2f s (%.3f s/step)", job.job_id, seconds, outcome.step_seconds)
            self._outbox.send(
                JobSucceeded(
                    job_id=job.job_id,
                    images=outcome.images,
                    model=outcome.model,
                    strategy=outcome.strategy,
                    seconds=seconds,
                    step_seconds=outcome.step_seconds,
                    memory=memory,
                    generate_started=outcome.generate_started,
                    generate_finished=outcome.generate_finished,
                )
            )
        else:
            logger.info("job=%d ended: %s: %s", job.job_id, outcome.kind.value, outcome.message)
            self._outbox.send(JobErrored(job.job_id, outcome.kind, outcome.message, memory))

    def _attempt(self, job: RunJob, started: float) -> _Made | _Failed:
        clock = _StepClock(job, started + job.timeout_s, self._inbox, self._outbox)
        images: Sequence[Image] | None = None
        oom_text = ""
        generate_started = time.monotonic()
        for attempt in (1, 2):
            out_of_memory = False
            try:
                images = self._backend.generate(job.request, clock.on_step)
            except RequestTooLarge as exc:
                return _Failed(JobErrorKind.TOO_LARGE, str(exc))
            except Exception as exc:
                stopped = _stopped_in(exc)
                if stopped is not None:
                    return _Failed(stopped.kind, stopped.message)
                if not _is_out_of_memory(exc):
                    logger.exception("job=%d failed", job.job_id)
                    return _Failed(JobErrorKind.ERROR, f"The backend failed: {type(exc).__name__}: {exc}")
                logger.warning("job=%d ran out of GPU memory (attempt %d): %s", job.job_id, attempt, exc)
                oom_text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                out_of_memory = True
            if not out_of_memory:
                break
            # Out of memory. The exception (and the frames holding its tensors) is gone by now.
            free_cached_memory(self._device)
            if attempt == 2 or not self._reduce_memory(job.job_id):
                _, strategy = _describe(self._backend)
                return _Failed(
                    JobErrorKind.OUT_OF_MEMORY,
                    f"The GPU ran out of memory at {job.request.width}x{job.request.height} with the "
                    f"{strategy!r} memory strategy and no lower-memory strategy is left ({oom_text}). "
                    "Try a smaller size, or free the GPU of other programs.",
                )
            clock.restart()
        generate_finished = time.monotonic()
        wanted = job.request.count
        if images is None or len(images) != wanted:
            made = 0 if images is None else len(images)
            return _Failed(
                JobErrorKind.ERROR, f"The backend returned {made} images for a request of {wanted}."
            )
        model, strategy = _describe(self._backend)
        raw = []
        for image in images:
            rgb = image.convert("RGB")
            raw.append(RawImage("RGB", rgb.width, rgb.height, rgb.tobytes()))
        return _Made(
            images=tuple(raw),
            model=model,
            strategy=strategy,
            step_seconds=clock.mean_step_seconds(
                fallback=(time.monotonic() - started) / job.request.total_steps
            ),
            generate_started=generate_started,
            generate_finished=generate_finished,
        )

    def _reduce_memory(self, job_id: int) -> bool:
        """Ask the backend for a lower-memory strategy; True if it switched to one."""
        reduce_memory = getattr(self._backend, "reduce_memory", None)
        if not callable(reduce_memory):
            return False
        try:
            switched = bool(reduce_memory())
        except Exception:
            logger.exception("job=%d: the backend failed to switch to a lower-memory strategy", job_id)
            return False
        if switched:
            logger.warning("job=%d: retrying with the %r strategy", job_id, _describe(self._backend)[1])
        return switched
