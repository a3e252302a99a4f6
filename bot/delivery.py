"""Delivery: the chat side watches job rows and tells each platform what changed.

CONTRACT (the bot-core helper implements `DeliveryLoop`; each adapter implements a `Presenter`).
The claim loop writes rows and signals `Topic.UPDATED`; this loop wakes on that signal or after
`poll_interval_s`, reads what changed, and calls the presenter of the job's platform. A final job is
delivered once: `mark_delivered` follows a successful post, so a crash before it delivers again after
restart rather than never.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from storage.jobs import Job, Platform
from storage.queue import JobQueue
from storage.signals import JobSignals


class Presenter(Protocol):
    """One chat platform's way of showing a job's life to its user."""

    platform: Platform

    async def show_progress(self, job: Job, eta_s: float | None) -> None:
        """Queue position or step n of N changed. The presenter throttles and skips unchanged text."""
        ...

    async def deliver(self, job: Job) -> str | None:
        """Post the finished image; return the platform id of the message it sent."""
        ...

    async def report_failure(self, job: Job) -> None:
        """Tell the user why the job failed (one line) and offer a retry."""
        ...

    async def report_cancelled(self, job: Job) -> None:
        """Finalise the status message of a cancelled job."""
        ...


class DeliveryLoop:
    """Runs until `stop` is set; never lets one presenter's error stop the others."""

    def __init__(
        self,
        queue: JobQueue,
        signals: JobSignals,
        presenters: Sequence[Presenter],
        *,
        poll_interval_s: float,
    ) -> None:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        raise NotImplementedError
