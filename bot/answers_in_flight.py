"""Answers being written when an adapter stops: let them finish (bounded) before the connections close.

A platform library that runs each event's handler in a task of its own (discord.py) does not wait for
those tasks when it disconnects, so an answer half-written at shutdown (a job queued, its status line
not yet shown) would be cut off. The adapter answers each event inside `tracking()`, and
`bot.frontend.ChatFrontend.stop` drains what is still running before it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class AnswersInFlight:
    """The tasks answering events right now, in one event loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """The current task answers an event until the block ends (a plain callback: nothing to track)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, within_s: float) -> None:
        """Wait until the answers being written now are done, at most `within_s` seconds; those still
        running then are left to the disconnect."""
        # Never the caller's own task: waiting for itself would only run out the clock.
        others = self._tasks - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=within_s)
