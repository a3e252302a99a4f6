"""The job as the rest of the program sees it: plain, frozen values built from rows.

A job moves through these states, and only along these arrows:

    queued ──► running ──► done
      │           │  └───► failed
      │           └──────► queued     (the worker died; attempts + 1, up to the configured maximum)
      └──────────┴───────► cancelled

done, failed and cancelled are final: nothing changes their status again. Delivery (the chat side
posting the result) is recorded separately in ``delivered_at``, so a finished job that was never
delivered is found again after a restart, and one that was delivered is never run or posted again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType


class JobStatus(enum.StrEnum):
    """Status values; each equals the string stored in the database."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


Platform = NewType("Platform", str)
"""Where a job came from, and so where its result goes: a chat platform's short name, as stored in the
rows ("discord", "telegram"). Each adapter declares its own (`bot/<platform>/platform.py`); storage
knows no platform and checks nothing about the name beyond its column's 16 characters."""


class FailureKind(enum.StrEnum):
    """Why a job failed, in a form the chat side can turn into words for a user."""

    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    WORKER_DIED = "worker_died"
    ERROR = "error"


class JobOrigin(enum.StrEnum):
    """What made a job (its lineage, with the parent job and image index)."""

    NEW = "new"
    REROLL = "reroll"
    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    UPSCALE = "upscale"
    IMAGE_PROMPT = "image_prompt"


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What to draw. Validated by the chat side before it is stored; the engine trusts it.

    `count` images with seeds seed, seed + 1, ... (one job for quotas, `count` images of time for ETAs).
    `strength` is the denoising strength of a job with an input image (stored with the job); None for
    text-to-image.
    """

    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    negative_prompt: str = ""
    count: int = 1
    strength: float | None = None

    @property
    def total_steps(self) -> int:
        """Denoising steps of all the job's images (what its progress counts to)."""
        return self.steps * self.count


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where the answer goes. Ids are strings: platforms differ in their id types."""

    platform: Platform
    chat_id: str
    user_id: str
    user_name: str
    guild_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job about to be enqueued."""

    requester: Requester
    request: ImageRequest
    parent_id: int | None = None
    origin: JobOrigin = JobOrigin.NEW
    parent_image_index: int | None = None  # which of the parent's images it starts from (vary, upscale)
    # The image it starts from (PNG, checked by the chat side), stored with the job in the database so
    # that any engine host reads it and it outlives the parent's picture.
    input_png: bytes | None = field(default=None, repr=False)
    # A second identical button press while the first one's job is still active returns that job
    # instead of queueing another; the chat side builds the key (e.g. "reroll:42:user 7").
    dedupe_key: str | None = None
    # The most queued plus running jobs the requester may have, this one included; None: no limit.
    # Checked in the transaction that inserts, so a burst of commands cannot get past it.
    max_active: int | None = None
    # The most jobs the requester may have submitted in the hour before this one, this one included;
    # None: no limit. Checked in the same transaction as max_active.
    max_per_hour: int | None = None
    # Post the result behind a spoiler (the prompt matched the operator's spoiler list).
    spoiler: bool = False
    # Edit the job's status line with its position and progress; False: only the result is posted.
    show_progress: bool = True


@dataclass(frozen=True, slots=True)
class Job:
    """One stored job, as read from its row."""

    id: int
    requester: Requester
    request: ImageRequest
    parent_id: int | None
    status: JobStatus
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    delivered_at: datetime | None
    progress_step: int
    progress_total: int
    error: str | None
    failure_kind: FailureKind | None
    result_path: str | None
    result_sha256: str | None
    duration_s: float | None
    step_seconds: float | None
    claimed_by: str | None
    status_message_id: str | None
    result_message_id: str | None
    dedupe_key: str | None
    # When the row last changed. Always set on jobs read from storage; the defaults below only keep
    # hand-built jobs (in tests) short.
    updated_at: datetime | None = None
    # The engine's lease: claim_count is the number of the current claim, which every write of its
    # holder carries (a write with an older number is refused: the job was taken over).
    claim_count: int = 0
    lease_expires_at: datetime | None = None
    # The chat side's claim on showing and delivering this job, and its failed delivery attempts.
    delivery_claimed_by: str | None = None
    delivery_lease_expires_at: datetime | None = None
    delivery_attempts: int = 0
    delivery_retry_at: datetime | None = None
    delivery_failing_since: datetime | None = None  # the first failed attempt of this run of failures
    delivery_error: str | None = None
    # Discord: the interaction token that edits the job's status line (sealed by the chat side), and when
    # it was issued.
    status_token: str | None = field(default=None, repr=False)
    status_token_at: datetime | None = None
    # As the chat side decided when it queued the job (`NewJob`): post the result as a spoiler; edit
    # the status line with progress.
    spoiler: bool = False
    show_progress: bool = True
    # Lineage and inputs: what made the job, from which of its parent's images, and the sha256 of the
    # image it starts from (`JobQueue.input_image` reads it), if any.
    origin: JobOrigin = JobOrigin.NEW
    parent_image_index: int | None = None
    input_sha256: str | None = None
    # Every result image, index 0..count-1 (images[0] is result_path / result_sha256); empty until done
    # and after the images expired.
    images: tuple[StoredImage, ...] = ()

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    @property
    def has_input_image(self) -> bool:
        return self.input_sha256 is not None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    job: Job
    created: bool  # False: an active job with the same dedupe key already existed


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """Where a queued job stands in fair order: position 1 runs next."""

    position: int
    jobs_ahead: tuple[Job, ...]
    running: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What startup recovery did."""

    requeued: tuple[Job, ...]
    failed: tuple[Job, ...]
    undelivered: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class StoredImage:
    path: str
    sha256: str
    size_bytes: int
