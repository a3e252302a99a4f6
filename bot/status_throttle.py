"""Status-line edits, throttled: at most one edit per interval per job, never the same text twice.

Chat platforms rate-limit message edits (Discord per interaction, Telegram per chat), and a job's step
count changes faster than that. So a change that comes too soon after the last edit waits, and a newer
change replaces it while it waits: when the interval ends, the newest text goes out. A final text (the
job ended) goes out at once and drops anything waiting. Both presenters edit through this one class.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[bool]]
"""Edits the status line to the text; True if it is shown now, False if it was not (e.g. dropped)."""


@dataclass(slots=True)
class _Line:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    shown: str | None = None
    last_edit: float = float("-inf")
    waiting: str | None = None
    send: Send | None = None
    flush: asyncio.Task[None] | None = None


class StatusThrottle:
    """The edit state of every job's status line in one chat process."""

    def __init__(self) -> None:
        self._lines: dict[int, _Line] = {}

    def mark_shown(self, job_id: int, text: str) -> None:
        """`text` was just posted as the job's status line (the first message counts as an edit)."""
        line = self._lines.setdefault(job_id, _Line())
        line.shown, line.last_edit = text, time.monotonic()

    def shown(self, job_id: int) -> str | None:
        line = self._lines.get(job_id)
        return None if line is None else line.shown

    async def update(
        self,
        job_id: int,
        text: str,
        send: Send,
        *,
        interval_s: float,
        final: bool = False,
        force: bool = False,
    ) -> bool:
        """Show `text` now, or once `interval_s` has passed since the last edit (unless `final`: then
        at once). `force` sends it even if unchanged (e.g. buttons come with it). True if shown now."""
        line = self._lines.setdefault(job_id, _Line())
        async with line.lock:
            line.send = send
            if text == line.shown and not force:
                line.waiting = None
                return True
            wait = line.last_edit + interval_s - time.monotonic()
            if not final and wait > 0:
                line.waiting = text
                if line.flush is None:
                    line.flush = asyncio.create_task(self._flush_later(line, wait), name=f"status-{job_id}")
                return False
            _cancel(line)
            return await self._send(line, text, send)

    def forget(self, job_id: int) -> None:
        """The job's status line is done with: drop its state and any waiting edit."""
        line = self._lines.pop(job_id, None)
        if line is not None:
            _cancel(line)

    async def close(self) -> None:
        """Drop every waiting edit (on shutdown)."""
        lines, self._lines = list(self._lines.values()), {}
        tasks = [line.flush for line in lines if line.flush is not None]
        for line in lines:
            _cancel(line)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _flush_later(self, line: _Line, delay: float) -> None:
        await asyncio.sleep(delay)
        async with line.lock:
            line.flush = None
            text, line.waiting = line.waiting, None
            if text is None or text == line.shown or line.send is None:
                return
            await self._send(line, text, line.send)

    @staticmethod
    async def _send(line: _Line, text: str, send: Send) -> bool:
        try:
            shown = await send(text)
        finally:
            # Counted from when the platform has the edit, so no two edits land closer than the interval.
            line.last_edit = time.monotonic()
        if shown:
            line.shown = text
        return shown


def _cancel(line: _Line) -> None:
    line.waiting = None
    if line.flush is not None and line.flush is not asyncio.current_task():
        line.flush.cancel()
    line.flush = None
