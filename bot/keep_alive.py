"""A platform's "busy" signal, repeated while a job runs.

Some chat platforms show that a bot is at work ("sending a photo…" on Telegram) only for a few seconds
after each signal. `KeepAlive` repeats a job's signal every `every_s` until the job's outcome is out
(`stop`), for at most `max_s`: a job whose outcome never reaches this process must not spin forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Signal = Callable[[], Awaitable[bool]]
"""Shows the signal once; False when it never can again (the bot was blocked or left the chat)."""


class KeepAlive:
    """One repeating signal per job, in one event loop."""

    def __init__(self, *, every_s: float, max_s: float) -> None:
        self._every_s = every_s
        self._max_s = max_s
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, job_id: int, signal: Signal) -> None:
        """Repeat `signal` for the job (nothing new if it repeats already)."""
        task = self._tasks.get(job_id)
        if task is None or task.done():
            self._tasks[job_id] = asyncio.create_task(
                self._repeat(job_id, signal), name=f"keep-alive-{job_id}"
            )

    def stop(self, job_id: int) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every signal (on shutdown)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _repeat(self, job_id: int, signal: Signal) -> None:
        deadline = time.monotonic() + self._max_s
        while time.monotonic() < deadline:
            try:
                if not await signal():
                    return
            except Exception as error:  # a courtesy: the next one may get through
                logger.debug("job=%d busy signal failed: %s", job_id, error)
            await asyncio.sleep(self._every_s)
