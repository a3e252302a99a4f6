"""An in-memory chat adapter: the one place a fake front end is fine (app and delivery tests).

`RecordingPresenter` records every call the delivery loop makes and lets a test wait for a condition
on those calls; `MemoryFrontend` wraps one in the `bot.frontend.Frontend` protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.job_view import ButtonAction, JobView
from bot.telegram import TELEGRAM
from storage.jobs import Job, JobStatus, Platform

WAIT_S = 20.0


@dataclass(frozen=True)
class Call:
    kind: str  # "progress", "deliver", "failure", "cancelled", "clean_up" or "ready_later"
    job_id: int
    status: JobStatus
    step: int = 0
    eta_s: float | None = None
    view: JobView | None = None


@dataclass
class RecordingPresenter:
    """Records every call; `failures` makes the next outcome posts raise, `hang` makes them never return."""

    platform: Platform = TELEGRAM
    result_actions: tuple[ButtonAction, ...] = (ButtonAction.REROLL, ButtonAction.DELETE)
    failures: int = 0
    hang: bool = False
    cleanup_fails: bool = False
    cleanup_hangs: bool = False
    calls: list[Call] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def show_progress(self, view: JobView) -> None:
        job = view.job
        await self._record(Call("progress", job.id, job.status, job.progress_step, view.eta_s, view))

    async def deliver(self, view: JobView) -> str | None:
        await self._record(Call("deliver", view.job.id, view.job.status, view=view))
        await self._maybe_fail()
        return f"message-{view.job.id}"

    async def report_failure(self, view: JobView) -> None:
        await self._record(Call("failure", view.job.id, view.job.status, view=view))
        await self._maybe_fail()

    async def report_cancelled(self, view: JobView) -> None:
        await self._record(Call("cancelled", view.job.id, view.job.status, view=view))
        await self._maybe_fail()

    async def clean_up(self, job: Job) -> None:
        await self._record(Call("clean_up", job.id, job.status))
        if self.cleanup_hangs:
            await asyncio.Event().wait()
        if self.cleanup_fails:
            raise ConnectionError("deleting the status message failed")

    async def report_ready_later(self, job: Job) -> None:
        await self._record(Call("ready_later", job.id, job.status))

    def of(self, kind: str, job_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.kind == kind and (job_id is None or c.job_id == job_id)]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds after some call; TimeoutError after WAIT_S."""
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(predicate)

    async def _record(self, call: Call) -> None:
        async with self.changed:
            self.calls.append(call)
            self.changed.notify_all()

    async def _maybe_fail(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the platform is down")


class MemoryFrontend:
    """A `Frontend` with no platform behind it; records start and stop."""

    def __init__(self, platform: Platform = TELEGRAM) -> None:
        self.name = f"memory-{platform}"
        self._presenter = RecordingPresenter(platform=platform)
        self.started = False
        self.stopped = False
        self._fatal = asyncio.Event()
        self._fatal_reason = ""

    @property
    def presenter(self) -> RecordingPresenter:
        return self._presenter

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def fail(self, reason: str) -> None:
        """The platform ends this adapter for good (as a revoked token would)."""
        self._fatal_reason = reason
        self._fatal.set()

    async def fatal_error(self) -> str:
        await self._fatal.wait()
        return self._fatal_reason

    @property
    def is_running(self) -> bool:
        return self.started and not self.stopped
