"""The parent side of the worker process: spawn it, wait for it to load, run jobs, restart it when it dies.

    supervisor = WorkerSupervisor(settings)
    ready = await supervisor.start()                 # EngineStartError says what to fix
    result = await supervisor.run(job_id, request, on_progress)   # JobFailed / WorkerDied
    await supervisor.cancel(job_id)                  # from another task; run() then raises JobFailed
    await supervisor.stop()

The event loop never blocks on the worker: a thread per worker process waits on its pipe and on its
process sentinel and hands each message (and finally the exit) to the loop with call_soon_threadsafe.
A worker that dies (kill -9, segfault) fails its running job with `WorkerDied` and is restarted after
`engine.restart_backoff_s` (doubling while it keeps dying). A worker that does not answer `answer_grace_s`
after a job's deadline, or after a cancel, is killed and restarted: nothing waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TypeVar

from engine.backend import factory_path
from engine.errors import EngineStartError, EngineStopped, JobFailed, WorkerDied
from engine.messages import (
    CancelJob,
    FromWorker,
    GenerationRequest,
    JobErrored,
    JobErrorKind,
    JobSucceeded,
    LoadProgress,
    RunJob,
    Shutdown,
    StepProgress,
    ToWorker,
    WorkerReady,
    WorkerStartFailed,
)
from engine.settings import EngineSettings
from engine.worker import worker_main

logger = logging.getLogger(__name__)

A = TypeVar("A")

ProgressCallback = Callable[[StepProgress], None]
"""Called in the event loop for each step the worker reports; keep it quick."""

LoadProgressCallback = Callable[[LoadProgress], None]
"""Called in the event loop for each loading report of the worker (every start, restarts too)."""

DEFAULT_ANSWER_GRACE_S = 30.0


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _WorkerProcess:
    """One spawned worker, its two pipes and the thread that reads from it."""

    def __init__(
        self,
        process: BaseProcess,
        commands: Connection,
        events: Connection,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.process = process
        self.pid = process.pid or 0
        self._commands = commands
        self._events = events
        self._loop = loop
        self.ready: asyncio.Future[WorkerReady] = loop.create_future()
        self.ready.add_done_callback(_consume_exception)
        self.exited: asyncio.Future[str] = loop.create_future()
        self.killed = False  # by us: no longer takes jobs, even before its exit is seen

    @classmethod
    async def spawn(cls, settings: EngineSettings) -> _WorkerProcess:
        context = multiprocessing.get_context("spawn")
        child_commands, commands = context.Pipe(duplex=False)
        events, child_events = context.Pipe(duplex=False)
        process = context.Process(
            target=worker_main,
            args=(settings, child_commands, child_events, logging.getLogger().getEffectiveLevel()),
            name="majicbot-worker",
            # Daemonic: if this process exits without stop(), multiprocessing still ends the worker.
            daemon=True,
        )
        # Spawning execs a new interpreter and writes its preparation data: not for the event loop.
        await asyncio.to_thread(process.start)
        child_commands.close()
        child_events.close()
        return cls(process, commands, events, asyncio.get_running_loop())

    def listen(
        self,
        on_message: Callable[[_WorkerProcess, FromWorker], None],
        on_exit: Callable[[_WorkerProcess, int | None], None],
    ) -> None:
        threading.Thread(
            target=self._read, args=(on_message, on_exit), name=f"worker-{self.pid}-reader", daemon=True
        ).start()

    def _read(
        self,
        on_message: Callable[[_WorkerProcess, FromWorker], None],
        on_exit: Callable[[_WorkerProcess, int | None], None],
    ) -> None:
        """Thread: pass each message to the loop; when the pipe closes or the process ends, the exit."""
        sentinel = self.process.sentinel
        while True:
            ready = wait([self._events, sentinel])
            if self._events not in ready:
                break  # the process ended and nothing is left to read
            try:
                message = self._events.recv()
            except (EOFError, OSError):
                break
            if not self._call_in_loop(on_message, message):
                return
        self.process.join(timeout=5)
        if self.process.exitcode is None:  # closed its pipe but lives on: make the exit real
            self.process.kill()
            self.process.join(timeout=5)
        self._events.close()
        self._call_in_loop(on_exit, self.process.exitcode)

    def _call_in_loop(self, callback: Callable[[_WorkerProcess, A], None], argument: A) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback, self, argument)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            return False
        return True

    def send(self, message: ToWorker) -> bool:
        """False if the worker can no longer receive (it died; its exit is on its way)."""
        try:
            self._commands.send(message)
        except OSError:
            return False
        return True

    def kill(self) -> None:
        if not self.exited.done():
            self.killed = True
            self.process.kill()

    def close(self) -> None:
        self._commands.close()


class _LoadLog:
    """The default loading report: a log line when a stage starts and at every tenth of it."""

    def __init__(self) -> None:
        self._stage = ""
        self._tenth = -1

    def __call__(self, progress: LoadProgress) -> None:
        tenth = progress.done * 10 // max(progress.total, 1)
        if progress.stage == self._stage and tenth == self._tenth:
            return
        self._stage, self._tenth = progress.stage, tenth
        if progress.total > 1_000_000:
            logger.info(
                "loading the model: %s, %.1f of %.1f GB (%d%%)",
                progress.stage,
                progress.done / 1e9,
                progress.total / 1e9,
                tenth * 10,
            )
        else:
            logger.info("loading the model: %s (%d of %d)", progress.stage, progress.done, progress.total)


def default_load_report() -> LoadProgressCallback:
    """Loading progress as log lines (`majicbot run` and `engine`, and `generate` off a terminal)."""
    return _LoadLog()


def _consume_exception(future: asyncio.Future[WorkerReady]) -> None:
    """Failures reach callers through start(); this keeps asyncio from also logging them as unretrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _RunningJob:
    job_id: int
    worker: _WorkerProcess
    outcome: asyncio.Future[JobSucceeded]
    on_progress: ProgressCallback | None
    cancel_requested: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def settle(self, result: JobSucceeded | BaseException) -> None:
        if self.outcome.done():
            return
        if isinstance(result, BaseException):
            self.outcome.set_exception(result)
        else:
            self.outcome.set_result(result)


class WorkerSupervisor:
    """Owns the worker process of one GPU. Use from one event loop; one job at a time."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        answer_grace_s: float = DEFAULT_ANSWER_GRACE_S,
        on_load_progress: LoadProgressCallback | None = None,
    ) -> None:
        self._settings = settings
        self._grace = answer_grace_s
        self._on_load_progress: LoadProgressCallback = on_load_progress or default_load_report()
        self._worker: _WorkerProcess | None = None
        self._starting: asyncio.Task[_WorkerProcess] | None = None
        self._job: _RunningJob | None = None
        self._failures = 0  # deaths and failed starts since the worker last answered a job
        self._stopped = False
        self.ready: WorkerReady | None = None
        """What the current worker reported when it finished loading."""
        self.restarts = 0
        """Workers restarted after dying (for metrics)."""

    @property
    def pid(self) -> int | None:
        """The live worker process's id (for logs and tests)."""
        return None if self._worker is None else self._worker.pid

    @property
    def is_ready(self) -> bool:
        """A worker has loaded and is alive (for health checks)."""
        worker = self._worker
        return (
            worker is not None
            and not worker.killed
            and not worker.exited.done()
            and worker.ready.done()
            and worker.ready.exception() is None
        )

    async def start(self) -> WorkerReady:
        """Start the worker (if it is not running) and wait until it has loaded the backend.

        Bounded by engine.load_timeout_s. Raises EngineStartError with the cause and the fix.
        """
        worker = await self._ready_worker()
        return worker.ready.result()

    async def run(
        self,
        job_id: int,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        *,
        timeout_s: float | None = None,
    ) -> JobSucceeded:
        """Run one job in the worker (waiting for a restarting worker first) and return its raw pixels
        (the caller encodes the PNG, off the event loop: `engine.png_metadata.encode_result`).

        Raises JobFailed (out of memory, timeout, cancelled, error), WorkerDied, EngineStartError when a
        restart fails, EngineStopped after stop(). timeout_s defaults to engine.job_timeout_s.
        """
        if self._job is not None:
            raise RuntimeError(f"job={self._job.job_id} is still running; the worker runs one job at a time")
        worker = await self._ready_worker()
        if self._job is not None:
            raise RuntimeError(f"job={self._job.job_id} is still running; the worker runs one job at a time")
        timeout = self._settings.job_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        job = _RunningJob(job_id, worker, loop.create_future(), on_progress)
        self._job = job
        try:
            worker.send(RunJob(job_id, request, timeout))  # if it fails, the worker's exit settles the job
            job.timers.append(
                loop.call_later(
                    timeout + self._grace,
                    self._give_up,
                    job,
                    JobFailed(
                        JobErrorKind.TIMEOUT,
                        f"The worker did not stop the job within {timeout:g} s (engine.job_timeout_s) "
                        f"+ {self._grace:g} s; it was killed and is being restarted.",
                    ),
                )
            )
            return await job.outcome
        except asyncio.CancelledError:
            # Our caller gave up on the job: stop it in the worker too, or it would hold the GPU.
            worker.send(CancelJob(job_id))
            raise
        finally:
            for timer in job.timers:
                timer.cancel()
            if self._job is job:
                self._job = None

    async def cancel(self, job_id: int) -> None:
        """Ask the worker to stop `job_id` at its next step; does nothing if that job is not running.

        If the worker has not answered `answer_grace_s` later, it is killed (and restarted).
        """
        job = self._job
        if job is None or job.job_id != job_id or job.cancel_requested:
            return
        job.cancel_requested = True
        logger.info("job=%d: cancelling in the worker", job_id)
        job.worker.send(CancelJob(job_id))
        job.timers.append(
            asyncio.get_running_loop().call_later(
                self._grace,
                self._give_up,
                job,
                JobFailed(
                    JobErrorKind.CANCELLED,
                    f"Cancelled; the worker did not stop within {self._grace:g} s and was restarted.",
                ),
            )
        )

    # `timeout` is when a worker that ignores Shutdown gets killed, not a cancel scope for the caller.
    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop the worker: a running job is cancelled at its next step; killed after `timeout` seconds."""
        self._stopped = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        worker = self._worker
        if worker is None:
            return
        worker.send(Shutdown())
        try:
            await asyncio.wait_for(asyncio.shield(worker.exited), timeout)
        except TimeoutError:
            logger.warning("the worker (pid %d) did not stop within %g s; killing it", worker.pid, timeout)
            worker.kill()
            await asyncio.wait_for(asyncio.shield(worker.exited), 10)
        worker.close()

    # -- internals -----------------------------------------------------------------------------
    async def _ready_worker(self) -> _WorkerProcess:
        while True:
            if self._stopped:
                raise EngineStopped("The engine was stopped; it runs no more jobs.")
            worker = self._worker
            if worker is None or worker.exited.done():
                break
            failed = worker.ready.done() and worker.ready.exception() is not None
            if worker.killed or failed:
                await asyncio.shield(worker.exited)  # on its way out; then start another
                continue
            if worker.ready.done():
                return worker
            break  # still loading: wait for the start in progress
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start(self._backoff()))
        starting = self._starting
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if starting.cancelled() and current is not None and not current.cancelling():
                raise EngineStopped("The engine was stopped while the worker was starting.") from None
            raise

    def _backoff(self) -> float:
        if self._failures == 0:
            return 0.0
        low, high = self._settings.restart_backoff_s
        return float(min(high, low * 2 ** (self._failures - 1)))

    async def _start(self, delay: float) -> _WorkerProcess:
        if delay > 0:
            logger.info("starting the worker again in %.1f s", delay)
            await asyncio.sleep(delay)
        factory_path(self._settings.backend)  # a malformed setting fails here, before a spawn
        worker = await _WorkerProcess.spawn(self._settings)
        self._worker = worker
        worker.listen(self._on_message, self._on_exit)
        logger.info("worker pid %d loading the %s backend", worker.pid, self._settings.backend)
        try:
            ready = await asyncio.wait_for(asyncio.shield(worker.ready), self._settings.load_timeout_s)
        except TimeoutError:
            worker.kill()
            self._failures += 1
            raise EngineStartError(
                f"The worker did not finish loading the model within {self._settings.load_timeout_s:g} s "
                "(engine.load_timeout_s) and was stopped. Check the log for where it got stuck, or raise "
                "the limit for a slow disk."
            ) from None
        except EngineStartError:
            self._failures += 1
            raise
        except asyncio.CancelledError:
            worker.kill()
            raise
        self.ready = ready
        mib = 2**20
        logger.info(
            "worker pid %d ready in %.1f s: %s, %s strategy, on %s (%d MiB reserved, %d of %d MiB free)",
            worker.pid,
            ready.load_seconds,
            ready.model,
            ready.strategy,
            ready.device_name,
            ready.memory.reserved // mib,
            ready.memory.free_on_device // mib,
            ready.memory.total_on_device // mib,
        )
        return worker

    def _give_up(self, job: _RunningJob, error: JobFailed) -> None:
        """The worker did not answer in time: fail the job now and kill the worker."""
        if job.outcome.done():
            return
        logger.error("job=%d: %s", job.job_id, error.message)
        job.settle(error)
        job.worker.kill()

    def _on_message(self, worker: _WorkerProcess, message: FromWorker) -> None:
        if isinstance(message, LoadProgress):
            try:
                self._on_load_progress(message)
            except Exception:
                logger.exception("the load progress callback failed")
            return
        if isinstance(message, WorkerReady):
            if not worker.ready.done():
                worker.ready.set_result(message)
            return
        if isinstance(message, WorkerStartFailed):
            if not worker.ready.done():
                worker.ready.set_exception(EngineStartError(message.message))
            return
        job = self._job
        if job is None or job.worker is not worker or job.job_id != message.job_id:
            return  # about a job whose caller already gave up
        if isinstance(message, StepProgress):
            if job.on_progress is not None:
                try:
                    job.on_progress(message)
                except Exception:
                    logger.exception("job=%d: the progress callback failed", job.job_id)
            return
        self._failures = 0
        mib = 2**20
        memory = message.memory
        logger.info(
            "job=%d: worker answered %s; GPU memory after clearing the cache: %d MiB reserved, peak %d MiB",
            job.job_id,
            "success" if isinstance(message, JobSucceeded) else message.kind.value,
            memory.reserved // mib,
            memory.peak_reserved // mib,
        )
        if isinstance(message, JobErrored):
            job.settle(JobFailed(message.kind, message.message))
        else:
            job.settle(message)

    def _on_exit(self, worker: _WorkerProcess, exitcode: int | None) -> None:
        reason = _exit_reason(exitcode)
        if not worker.exited.done():
            worker.exited.set_result(reason)
        was_ready = worker.ready.done() and not worker.ready.exception()
        if not worker.ready.done():
            worker.ready.set_exception(
                EngineStartError(
                    f"The worker process {reason} while loading the {self._settings.backend!r} backend; "
                    "its log lines above say why."
                )
            )
        job = self._job
        if job is not None and job.worker is worker and not job.outcome.done():
            if job.cancel_requested:
                job.settle(JobFailed(JobErrorKind.CANCELLED, f"Cancelled; the worker {reason}."))
            else:
                logger.error("job=%d: the worker process (pid %d) %s", job.job_id, worker.pid, reason)
                job.settle(WorkerDied(f"The worker process {reason} while running the job."))
        if self._worker is not worker:
            return
        self._worker = None
        worker.close()
        if self._stopped:
            logger.info("worker pid %d %s", worker.pid, reason)
            return
        if was_ready:
            self._failures += 1
            self.restarts += 1
            logger.warning("worker pid %d %s; restarting it", worker.pid, reason)
            self._starting = asyncio.create_task(self._start(self._backoff()))
            self._starting.add_done_callback(self._log_restart)

    @staticmethod
    def _log_restart(task: asyncio.Task[_WorkerProcess]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("restarting the worker failed: %s", error)
