"""Wiring for `majicbot run`: database, recovery, engine, chat adapters, delivery; clean shutdown.

`Application.run(stop)` reads top to bottom: start every part in order, serve until `stop` is set or a
part dies, then always shut down in reverse order, each step bounded by a timeout:

    database (+ migrations) -> queue -> recovery -> engine task (load the worker, then claim loop)
                                                  -> adapters -> delivery loop

The worker loads its models while the adapters start, so commands are queued from the first second; a
missing model file is found before anything starts (preflight), a worker that fails later ends the run.

The chat process never imports torch or diffsynth: the worker is a spawned child process, and the
adapters are imported only when configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bot.config import Config
from bot.delivery import DeliveryLoop
from bot.frontend import Frontend
from bot.metrics import NO_DELIVERY_METRICS, Health, PrometheusMetrics
from bot.moderation import Moderation, Operators
from bot.service import BotService
from engine.metrics import NO_ENGINE_METRICS
from storage.bans import BanList
from storage.database import Database
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.retention import ImageRetention
from storage.signals import JobSignals, LocalSignals, PostgresSignals
from storage.user_settings import UserSettingsStore

if TYPE_CHECKING:
    from engine.claim_loop import ClaimLoop
    from engine.supervisor import WorkerSupervisor

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

FrontendFactory = Callable[[BotService], Sequence[Frontend]]
"""Builds the chat adapters once the service exists (tests pass one; `run` builds from the config)."""


def no_chat_adapter(config: Config) -> str:
    """Why `run` cannot serve chats: no platform's token is set; says where to set one."""
    platforms = config.platforms
    keys = " or ".join(f"{platform.name}.token" for platform in platforms)
    variables = " / ".join(platform.token_variable for platform in platforms)
    return f"no chat adapter is configured: set {keys} in the config file (or {variables} in the environment)"


class ApplicationError(Exception):
    """The application cannot run as configured; the text says what to change."""


class Application:
    """Everything `majicbot run` runs, in one event loop."""

    def __init__(
        self,
        config: Config,
        *,
        with_engine: bool = True,
        with_chat: bool = True,
        frontends: FrontendFactory | None = None,
        shutdown_timeout_s: float = 15.0,
    ) -> None:
        if not (with_engine or with_chat):
            raise ApplicationError("nothing to run: enable the engine, the chat adapters, or both")
        if with_chat and frontends is None and not config.enabled_platforms():
            raise ApplicationError(no_chat_adapter(config))
        self._config = config
        self._with_engine = with_engine
        self._with_chat = with_chat
        self._build_frontends = frontends or _configured_frontends(config)
        self._shutdown_timeout_s = shutdown_timeout_s
        # Several hosts may share one database: a claimer name that survives restarts lets recovery
        # re-queue only what this host (and this GPU) left running.
        self.claimer = f"{socket.gethostname()}/{config.engine.device}"
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()  # set once ready, or once run() ended without getting there
        self._inner_stop = asyncio.Event()
        self._shutdown_steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: JobQueue | None = None
        self._images: ImageStore | None = None
        self._signals: JobSignals | None = None
        self._service: BotService | None = None
        self._frontends: tuple[Frontend, ...] = ()
        self._supervisor: WorkerSupervisor | None = None
        self.metrics: PrometheusMetrics | None = None
        self.metrics_port: int | None = None
        """Where /metrics and /healthz listen, once started with metrics enabled."""

    # -- what tests and the CLI use ------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, serve until `stop` is set (or a part fails), and always shut down."""
        try:
            await self._start()
            self._ready.set()
            self._settled.set()
            logger.info("majicbot is running (engine=%s, chat=%s)", self._with_engine, self._with_chat)
            await self._serve(stop)
        finally:
            await self._shutdown()
            self._settled.set()

    async def started(self) -> None:
        """Return once everything has started; raise if the application ended before that."""
        await self._settled.wait()
        if not self._ready.is_set():
            raise ApplicationError("the application stopped before it finished starting; see the log")

    @property
    def queue(self) -> JobQueue:
        return _started(self._queue)

    @property
    def service(self) -> BotService:
        return _started(self._service)

    @property
    def signals(self) -> JobSignals:
        return _started(self._signals)

    @property
    def images(self) -> ImageStore:
        return _started(self._images)

    # -- start, serve, shut down ---------------------------------------------------------------
    async def _start(self) -> None:
        config = self._config
        if config.metrics.enabled:
            self.metrics = PrometheusMetrics()  # before anything starts: a missing package fails fast
        database = Database(config.storage.database_url, busy_timeout_ms=config.storage.busy_timeout_ms)
        self._on_shutdown("database", database.close)
        await database.upgrade()
        if database.dialect == "postgresql":
            # Other processes and hosts write the same rows: LISTEN/NOTIFY wakes them (and this one).
            signals = PostgresSignals.for_url(config.storage.database_url)
            self._on_shutdown("notifications", signals.close)
            await signals.start()
            self._signals = signals
        else:
            self._signals = LocalSignals()
        self._queue = JobQueue(
            database,
            self._signals,
            max_attempts=config.storage.max_attempts,
            lease_s=config.storage.lease_s,
        )
        self._images = ImageStore(
            config.storage.data_dir,
            database=database,
            in_database=config.storage.images_in_database(database.dialect),
        )
        self._service = BotService(
            self._queue,
            self._images,
            config.limits,
            config.engine,
            config.variations,
            user_settings=UserSettingsStore(database),
            bans=BanList(database),
            moderation=Moderation(config.moderation, Operators.from_sections(config.sections())),
        )
        if config.storage.keep_images_days is not None:
            retention = ImageRetention(
                self._queue,
                self._images,
                keep_days=config.storage.keep_images_days,
                interval_s=config.storage.image_cleanup_interval_s,
            )
            self._spawn("image retention", retention.run(self._inner_stop))
        if self.metrics is not None:
            await self._start_metrics(self.metrics)
        if self._with_engine:
            await self._start_engine()
        if self._with_chat:
            await self._start_chat()

    async def _start_engine(self) -> None:
        # Imported here: a chat-only host needs neither module (nor their multiprocessing setup).
        from engine.backend import preflight
        from engine.claim_loop import ClaimLoop
        from engine.supervisor import WorkerSupervisor

        queue = self.queue
        report = await queue.recover(self.claimer)
        for job in report.requeued:
            logger.info("recovery: re-queued a job left running (attempt %d) job=%d", job.attempts, job.id)
        for job in report.failed:
            logger.warning("recovery: failed a job its worker died under too often job=%d", job.id)
        for job in report.undelivered:
            logger.info("recovery: finished job not delivered yet (%s) job=%d", job.status, job.id)
        logger.info(
            "recovery as %s: %d re-queued, %d failed, %d waiting for delivery",
            self.claimer,
            len(report.requeued),
            len(report.failed),
            len(report.undelivered),
        )

        await asyncio.to_thread(preflight, self._config.engine)
        supervisor = WorkerSupervisor(self._config.engine)
        self._supervisor = supervisor
        self._on_shutdown("worker", lambda: supervisor.stop(self._shutdown_timeout_s / 2))
        claim_loop = ClaimLoop(
            queue,
            self.images,
            self.signals,
            supervisor,
            claimer=self.claimer,
            poll_interval_s=self._config.storage.poll_interval_s,
            metrics=self.metrics or NO_ENGINE_METRICS,
        )
        # The models load while the adapters start: commands are accepted and queued meanwhile
        # (a Discord interaction that finds nobody listening is lost), and run once the worker is ready.
        self._spawn("engine", _load_then_claim(supervisor, claim_loop, self._inner_stop))

    async def _start_chat(self) -> None:
        self._frontends = tuple(self._build_frontends(self.service))
        if not self._frontends:
            raise ApplicationError(no_chat_adapter(self._config))
        for frontend in self._frontends:
            self._on_shutdown(f"{frontend.name} adapter", frontend.stop)
            await frontend.start()
            logger.info("%s adapter started", frontend.name)
            self._spawn(f"{frontend.name} adapter", _fail_on_fatal_error(frontend, self._inner_stop))
        settings = self._config.delivery
        delivery = DeliveryLoop(
            self.queue,
            self.signals,
            [frontend.presenter for frontend in self._frontends],
            poll_interval_s=self._config.storage.poll_interval_s,
            delivery_lease_s=self._config.storage.delivery_lease_s,
            give_up_after_s=settings.retry_for_s,
            retry_backoff_s=settings.retry_backoff_s,
            call_timeout_s=settings.post_timeout_s,
            cleanup_timeout_s=settings.cleanup_timeout_s,
            metrics=self.metrics or NO_DELIVERY_METRICS,
        )
        self._spawn("delivery loop", delivery.run(self._inner_stop))

    async def _start_metrics(self, metrics: PrometheusMetrics) -> None:
        from bot.metrics_server import MetricsServer

        settings = self._config.metrics
        metrics.watch(health=self.health, worker_restarts=self._worker_restarts)
        server = MetricsServer(metrics, settings.listen, settings.port)
        await server.start()
        self._on_shutdown("metrics endpoint", server.stop)
        self.metrics_port = server.port
        sampler = _sample_queue_depth(self.queue, metrics, settings.queue_sample_interval_s, self._inner_stop)
        self._spawn("queue depth sampler", sampler)

    def health(self) -> Health:
        """Whether the engine (when this process runs one) and each started adapter are up."""
        supervisor = self._supervisor
        engine_up = None if not self._with_engine else supervisor is not None and supervisor.is_ready
        return Health(engine_up, {frontend.name: frontend.is_running for frontend in self._frontends})

    def _worker_restarts(self) -> int:
        return 0 if self._supervisor is None else self._supervisor.restarts

    async def _serve(self, stop: asyncio.Event) -> None:
        """Until `stop` is set or a background loop ends on its own (which only a bug makes it do)."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({stopped, *self._tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped
        for task in done:
            if task is stopped:
                continue
            error = task.exception()
            if error is not None:
                raise ApplicationError(f"the {task.get_name()} failed: {error}") from error
            raise ApplicationError(f"the {task.get_name()} stopped unexpectedly; see the log")

    async def _shutdown(self) -> None:
        """Stop every started part in reverse order of starting; each step bounded by a timeout."""
        logger.info("shutting down")
        # Every loop sees this at once: the claim loop stops claiming while the adapters still stop.
        self._inner_stop.set()
        while self._shutdown_steps:
            name, step = self._shutdown_steps.pop()
            await self._bounded(name, step())
        self._tasks.clear()
        logger.info("shut down")

    async def _bounded(self, name: str, step: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self._shutdown_timeout_s):
                await step
        except TimeoutError:
            logger.error(
                "stopping the %s took over %.0f s; went on without it", name, self._shutdown_timeout_s
            )
        except Exception:
            logger.exception("stopping the %s failed", name)

    def _on_shutdown(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        self._shutdown_steps.append((name, step))

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.append(task)
        self._on_shutdown(name, lambda: _finish_task(task, self._shutdown_timeout_s * 0.8))


async def _load_then_claim(supervisor: WorkerSupervisor, claim_loop: ClaimLoop, stop: asyncio.Event) -> None:
    """Start the worker (load the models), then claim and run jobs until `stop` is set."""
    ready = await supervisor.start()
    logger.info(
        "worker ready: backend=%s model=%s strategy=%s device=%s loaded in %.1f s",
        ready.backend,
        ready.model,
        ready.strategy,
        ready.device_name,
        ready.load_seconds,
    )
    await claim_loop.run(stop)


async def _fail_on_fatal_error(frontend: Frontend, stop: asyncio.Event) -> None:
    """Raise once the platform has ended `frontend` for good (which ends the application); return
    when `stop` is set first."""
    fatal = asyncio.ensure_future(frontend.fatal_error())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fatal, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (fatal, stopped):
            waiter.cancel()
    if fatal.done() and not fatal.cancelled():
        reason = fatal.result()
        logger.critical("%s: %s", frontend.name, reason)
        raise ApplicationError(reason)


async def _sample_queue_depth(
    queue: JobQueue, metrics: PrometheusMetrics, interval_s: float, stop: asyncio.Event
) -> None:
    """Set the queue-depth gauge every `interval_s` until `stop` (a read of the queued rows)."""
    while not stop.is_set():
        try:
            metrics.set_queue_depth(len(await queue.queued_in_fair_order()))
        except Exception as error:  # a database hiccup: the next sample tries again
            logger.warning("sampling the queue depth failed: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def _finish_task(task: asyncio.Task[None], grace_s: float) -> None:
    """Let a loop that saw the stop event finish its pass; cancel it if it takes longer than grace_s."""
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        logger.warning("the %s did not stop within %.0f s; cancelling it", task.get_name(), grace_s)
        task.cancel()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, Exception) and not isinstance(outcome, ApplicationError):  # said already
        logger.error("the %s ended with an error: %r", task.get_name(), outcome)


def _configured_frontends(config: Config) -> FrontendFactory:
    def build(service: BotService) -> Sequence[Frontend]:
        # A platform's factory imports its library: an unused platform's library is never loaded.
        return [
            platform.frontend(config.section(platform), service, config.limits)
            for platform in config.enabled_platforms()
        ]

    return build


def _started(value: _T | None) -> _T:
    if value is None:
        raise RuntimeError("the application has not started yet; await started() first")
    return value
