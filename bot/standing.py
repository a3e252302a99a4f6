"""Where a user's job stands in the queue: the values the service returns and the texts render."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from storage.jobs import Job


@dataclass(frozen=True, slots=True)
class Queued:
    """A job that was just queued (or found already queued for the same button press)."""

    job: Job
    position: int  # 1 = runs next; 0 = already running
    jobs_ahead: int
    eta_s: float | None  # seconds until it should be done; None until timings are known
    created: bool


@dataclass(frozen=True, slots=True)
class QueueOverview:
    running: Sequence[Job]
    queued_total: int
    mine: Sequence[Queued]  # the asking user's active jobs with positions and ETAs
