"""One platform-neutral view of a job: where it stands, its status line, and its buttons as data.

`build_view` is the one place that puts these together; the delivery loop builds a view once per change
and hands it to the job's presenter, which only renders it (Discord: message content and components,
Telegram: text and an inline keyboard). So both platforms say the same words about the same job.

A button carries only an action and a job id (`ButtonPress.key`, e.g. ``reroll:42``), everything else is
read from the database when it is pressed, so buttons keep working after a restart.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from bot import texts
from storage.jobs import Job, JobStatus


class ButtonAction(enum.StrEnum):
    """What a button does; the value is the key's first part, so it must never change."""

    REROLL = "reroll"  # the same prompt with a new random seed
    RETRY = "retry"  # a failed job again, same seed
    DETAILS = "details"  # the full prompt and parameters
    ORIGINAL = "png"  # the lossless PNG as a file
    DELETE = "delete"  # remove the posted image (its owner or an admin)


class ButtonStyle(enum.StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    DANGER = "danger"


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """A pressed button as the adapter decoded it: the action and the job it is about."""

    action: ButtonAction
    job_id: int

    @property
    def key(self) -> str:
        """At most 27 characters: the action and up to 20 digits."""
        return f"{self.action.value}:{self.job_id}"

    @classmethod
    def parse(cls, key: str | None) -> ButtonPress | None:
        """The press behind `key`, or None for keys this bot never made (old or forged buttons)."""
        action, _, job = (key or "").partition(":")
        if not (job.isascii() and job.isdigit()) or len(job) > 20:
            return None
        try:
            return cls(ButtonAction(action), int(job))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    press: ButtonPress
    label: str
    emoji: str | None
    style: ButtonStyle


_LOOKS: dict[ButtonAction, tuple[str, str | None, ButtonStyle]] = {
    ButtonAction.REROLL: ("Reroll", "🎲", ButtonStyle.PRIMARY),
    ButtonAction.RETRY: ("Try again", "🔁", ButtonStyle.PRIMARY),
    ButtonAction.DETAILS: ("Details", None, ButtonStyle.SECONDARY),
    ButtonAction.ORIGINAL: ("Original PNG", "🖼", ButtonStyle.SECONDARY),
    ButtonAction.DELETE: ("Delete", "🗑️", ButtonStyle.DANGER),
}


def button(action: ButtonAction, job_id: int, label: str | None = None) -> ButtonSpec:
    """The button for `action` on job `job_id`, with its usual look (or another label)."""
    usual, emoji, style = _LOOKS[action]
    return ButtonSpec(ButtonPress(action, job_id), label or usual, emoji, style)


@dataclass(frozen=True, slots=True)
class JobView:
    """What a user should see of a job right now."""

    job: Job
    position: int | None  # 1 = runs next, 0 = running, None = finished
    jobs_ahead: int
    eta_s: float | None  # seconds until it should be done; None until timings are known
    status_line: str
    buttons: tuple[ButtonSpec, ...]


def build_view(
    job: Job,
    *,
    position: int | None = None,
    jobs_ahead: int = 0,
    eta_s: float | None = None,
    result_actions: Sequence[ButtonAction] = (),
) -> JobView:
    """The view of `job`. `position` counts from 1 for a queued job (ignored otherwise);
    `result_actions` are the buttons the platform offers under a finished picture."""
    if job.status is JobStatus.RUNNING:
        position = 0
    elif job.status is not JobStatus.QUEUED:
        position, eta_s = None, None
    buttons: tuple[ButtonSpec, ...] = ()
    if job.status is JobStatus.DONE:
        buttons = tuple(button(action, job.id) for action in result_actions)
    elif job.status is JobStatus.FAILED:
        buttons = (button(ButtonAction.RETRY, job.id),)
    return JobView(
        job=job,
        position=position,
        jobs_ahead=jobs_ahead if position else 0,
        eta_s=eta_s,
        status_line=texts.progress_text(job, eta_s, position or None),
        buttons=buttons,
    )


def history_buttons(jobs: Sequence[Job]) -> tuple[ButtonSpec, ...]:
    """A Reroll button per job listed by /history, labelled with its id."""
    return tuple(button(ButtonAction.REROLL, job.id, label=f"#{job.id}") for job in jobs)
