"""One platform-neutral view of a job: where it stands, its status line, and its buttons as data.

`build_view` is the one place that puts these together; the delivery loop builds a view once per change
and hands it to the job's presenter, which only renders it (Discord: message content and components,
Telegram: text and an inline keyboard). So both platforms say the same words about the same job.

A button carries only an action, a job id and, for the buttons of one image of several, the image's
number (`ButtonPress.key`, e.g. ``reroll:42`` or ``upscale:42:2`` for U2), everything else is read from
the database when it is pressed, so buttons keep working after a restart.

Under a finished job: a set of several images gets U1..Un (upscale image i) and V1..Vn (vary image i,
subtle) over one row of the platform's buttons (one Reroll for the set); a single image gets Vary
(Subtle), Vary (Strong) and Upscale 2x over that row.
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
    VARY_SUBTLE = "vary"  # image i again, close to it (new seed, the subtle strength)
    VARY_STRONG = "varystrong"  # image i again, further from it
    UPSCALE = "upscale"  # image i at twice its size


# Actions about one image of a job: their keys may name the image.
IMAGE_ACTIONS = frozenset({ButtonAction.VARY_SUBTLE, ButtonAction.VARY_STRONG, ButtonAction.UPSCALE})
MAX_IMAGES_IN_KEY = 9


class ButtonStyle(enum.StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    DANGER = "danger"


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """A pressed button as the adapter decoded it: the action and the job it is about."""

    action: ButtonAction
    job_id: int
    image: int = 0  # which of the job's images (0-based), for IMAGE_ACTIONS

    @property
    def key(self) -> str:
        """At most 33 characters: the action, up to 20 digits and, past the first image, its number
        (1-based, as the buttons say: ``upscale:42:2`` is U2)."""
        key = f"{self.action.value}:{self.job_id}"
        return key if self.image == 0 else f"{key}:{self.image + 1}"

    @classmethod
    def parse(cls, key: str | None) -> ButtonPress | None:
        """The press behind `key`, or None for keys this bot never made (old or forged buttons)."""
        action, _, rest = (key or "").partition(":")
        job, _, image = rest.partition(":")
        if not (job.isascii() and job.isdigit()) or len(job) > 20:
            return None
        try:
            press = cls(ButtonAction(action), int(job))
        except ValueError:
            return None
        if not image:
            return press
        if press.action not in IMAGE_ACTIONS or len(image) != 1 or not "1" <= image <= str(MAX_IMAGES_IN_KEY):
            return None
        return cls(press.action, press.job_id, int(image) - 1)


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    press: ButtonPress
    label: str
    emoji: str | None
    style: ButtonStyle
    row: int | None = None  # buttons of one row stay together (`button_rows`); None: any row


_LOOKS: dict[ButtonAction, tuple[str, str | None, ButtonStyle]] = {
    ButtonAction.REROLL: ("Reroll", "🎲", ButtonStyle.PRIMARY),
    ButtonAction.RETRY: ("Try again", "🔁", ButtonStyle.PRIMARY),
    ButtonAction.DETAILS: ("Details", None, ButtonStyle.SECONDARY),
    ButtonAction.ORIGINAL: ("Original PNG", "🖼", ButtonStyle.SECONDARY),
    ButtonAction.DELETE: ("Delete", "🗑️", ButtonStyle.DANGER),
    ButtonAction.VARY_SUBTLE: ("Vary (Subtle)", None, ButtonStyle.SECONDARY),
    ButtonAction.VARY_STRONG: ("Vary (Strong)", None, ButtonStyle.SECONDARY),
    ButtonAction.UPSCALE: ("Upscale 2x", None, ButtonStyle.SECONDARY),
}
# Under a set of images: U1..Un and V1..Vn.
_SET_LABELS = {ButtonAction.UPSCALE: "U", ButtonAction.VARY_SUBTLE: "V"}
# Under one image, the first row.
_SINGLE_IMAGE_ACTIONS = (ButtonAction.VARY_SUBTLE, ButtonAction.VARY_STRONG, ButtonAction.UPSCALE)


def button(
    action: ButtonAction, job_id: int, label: str | None = None, *, image: int = 0, row: int | None = None
) -> ButtonSpec:
    """The button for `action` on job `job_id` (image `image`, 0-based), with its usual look (or
    another label)."""
    usual, emoji, style = _LOOKS[action]
    return ButtonSpec(ButtonPress(action, job_id, image), label or usual, emoji, style, row)


def result_buttons(job: Job, result_actions: Sequence[ButtonAction]) -> tuple[ButtonSpec, ...]:
    """The buttons under a finished job's pictures: the per-image rows, then the platform's row
    (`result_actions`; under a set, Original PNG sends every image's PNG)."""
    count = min(len(job.images) or job.request.count, MAX_IMAGES_IN_KEY)
    per_image: list[ButtonSpec] = []
    actions = [*result_actions]
    if count > 1:
        for row, action in enumerate(_SET_LABELS):
            per_image += [
                button(action, job.id, f"{_SET_LABELS[action]}{index + 1}", image=index, row=row)
                for index in range(count)
            ]
    else:
        per_image = [button(action, job.id, row=0) for action in _SINGLE_IMAGE_ACTIONS]
    last = per_image[-1].row or 0
    return (*per_image, *(button(action, job.id, row=last + 1) for action in actions))


def button_rows(buttons: Sequence[ButtonSpec], per_row: int) -> list[list[ButtonSpec]]:
    """`buttons` laid out in rows: those of one `row` together, at most `per_row` in each."""
    rows: list[list[ButtonSpec]] = []
    current: int | None = None
    for spec in buttons:
        if not rows or spec.row != current or len(rows[-1]) >= per_row:
            rows.append([])
            current = spec.row
        rows[-1].append(spec)
    return rows


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
        buttons = result_buttons(job, result_actions) if result_actions else ()
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
