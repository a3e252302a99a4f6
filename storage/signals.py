"""Wake-up signals between whoever writes job rows and whoever waits on them.

The job rows are the only channel between the claim loop and the chat adapters; a signal only says
"look again". Waiters always re-read the table after a bounded wait, so a lost signal costs at most one
poll interval, and a process that shares the database but not this object (another host) still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Topic(enum.StrEnum):
    QUEUED = "queued"  # a job was enqueued or re-queued: claimers look
    UPDATED = "updated"  # a job made progress, finished, failed or was cancelled: deliverers look


class JobSignals(Protocol):
    def notify(self, topic: Topic) -> None: ...

    # A plain timeout argument, not asyncio.timeout(): the bound is part of the protocol (every waiter
    # must re-read the table after it), not something each caller may forget to add.
    async def wait(self, topic: Topic, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until `topic` is notified or `timeout` passes; True if notified."""
        ...


class LocalSignals:
    """In-process signals: enough when the claim loop and the adapters share one event loop (SQLite,
    one machine). Several processes on PostgreSQL use `PostgresSignals`."""

    def __init__(self) -> None:
        self._events: dict[Topic, asyncio.Event] = {}

    def notify(self, topic: Topic) -> None:
        event = self._events.pop(topic, None)
        if event is not None:
            event.set()

    async def wait(self, topic: Topic, timeout: float) -> bool:  # noqa: ASYNC109
        event = self._events.setdefault(topic, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


CHANNEL = "majicbot_jobs"
"""The PostgreSQL notification channel; the payload is the topic's value."""


class PostgresSignals:
    """Signals between processes and hosts through PostgreSQL's LISTEN/NOTIFY.

    `notify` wakes this process's waiters at once and sends a NOTIFY (from a background task, so it never
    blocks its caller); a NOTIFY from another process wakes the waiters here. One dedicated connection
    listens and sends; if it drops, it is opened again with a growing pause, and meanwhile waiters fall
    back to polling, as they always may. Notifications this process sent come back to it too: they are
    recognised by the server process id and dropped.
    """

    def __init__(self, dsn: str, *, reconnect_backoff_s: tuple[float, float] = (0.5, 30.0)) -> None:
        self._dsn = dsn
        self._backoff_s = reconnect_backoff_s
        self._local = LocalSignals()
        self._outbox: set[Topic] = set()
        self._send = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_url(cls, url: str) -> PostgresSignals:
        """From a SQLAlchemy URL such as postgresql+asyncpg://user:password@host/db."""
        from sqlalchemy.engine import make_url

        parsed = make_url(url).set(drivername="postgresql")
        return cls(parsed.render_as_string(hide_password=False))

    async def start(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Connect and listen; returns once listening (or after `timeout`, still retrying behind)."""
        self._task = asyncio.create_task(self._run(), name="postgres signals")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        if not self._connected.is_set():
            logger.warning("not listening for PostgreSQL notifications yet; polling meanwhile")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def notify(self, topic: Topic) -> None:
        self._local.notify(topic)
        self._outbox.add(topic)
        self._send.set()

    async def wait(self, topic: Topic, timeout: float) -> bool:  # noqa: ASYNC109
        return await self._local.wait(topic, timeout)

    async def _run(self) -> None:
        import asyncpg  # only PostgreSQL deployments need it (the `postgres` extra)

        failures = 0
        while True:
            try:
                connection = await asyncpg.connect(self._dsn)
                try:
                    await self._serve(connection)
                finally:
                    self._connected.clear()
                    if not connection.is_closed():
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(connection.close(), 5)
                failures = 0
                error: Exception = ConnectionError("the notification connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            failures += 1
            low, high = self._backoff_s
            pause = min(high, low * 2 ** (failures - 1))
            logger.warning("PostgreSQL notifications unavailable (%s); retrying in %.1f s", error, pause)
            await asyncio.sleep(pause)

    async def _serve(self, connection: Any) -> None:
        """Listen, and send what `notify` queued, until the connection is lost."""
        own_pid = connection.get_server_pid()
        lost = asyncio.Event()

        def received(_connection: object, pid: int, _channel: str, payload: str) -> None:
            if pid != own_pid and payload in _TOPICS:
                self._local.notify(Topic(payload))

        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, received)
        self._connected.set()
        logger.info("listening for job notifications on PostgreSQL")
        while not lost.is_set():
            sending = asyncio.ensure_future(self._send.wait())
            dropped = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({sending, dropped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sending.cancel()
                dropped.cancel()
            self._send.clear()
            topics, self._outbox = self._outbox, set()
            for topic in topics:
                await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, topic.value)


_TOPICS = frozenset(topic.value for topic in Topic)
