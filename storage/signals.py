"""Wake-up signals between whoever writes job rows and whoever waits on them.

The job rows are the only channel between the claim loop and the chat adapters; a signal only says
"look again". Waiters always re-read the table after a bounded wait, so a lost signal costs at most one
poll interval, and a process that shares the database but not this object (another host) still works.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Protocol


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
    """In-process signals: enough when the claim loop and the adapters share one event loop.

    Several processes (PostgreSQL LISTEN/NOTIFY) fit the same protocol.
    """

    def __init__(self) -> None:
        self._generation: dict[Topic, int] = dict.fromkeys(Topic, 0)
        self._events: dict[Topic, asyncio.Event] = {}

    def notify(self, topic: Topic) -> None:
        self._generation[topic] += 1
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
