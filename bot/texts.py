"""The words both chat adapters show, so Discord and Telegram users read the same sentences.

Plain text only: Telegram sends user-facing text without a parse mode, and nothing here relies on
Discord's markdown. Adapters add their own layout (embeds, buttons) around these lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.command_parser import EXAMPLE, FLAGS
from bot.command_table import COMMAND_TABLE, usage
from bot.settings import LimitsSettings
from bot.standing import Queued, QueueOverview
from bot.user_settings import SettingName
from storage.bans import Ban
from storage.errors import StorageFull
from storage.jobs import FailureKind, Job, JobOrigin, JobStatus

ELLIPSIS = "…"

FAILURE_REASONS: dict[FailureKind, str] = {
    FailureKind.OUT_OF_MEMORY: (
        "the GPU ran out of memory. Try a smaller size (--ar 1:1 or --size 768x768) or fewer --steps."
    ),
    FailureKind.TIMEOUT: "it took too long and was stopped. Try fewer --steps or a smaller size.",
    FailureKind.WORKER_DIED: (
        "the image worker crashed while drawing it. Try again; if it keeps happening, "
        "tell the bot's operator."
    ),
    FailureKind.ERROR: "something went wrong while drawing it. Try again in a moment.",
}

HELP_EXAMPLES: tuple[str, ...] = (
    EXAMPLE,
    "/imagine a lighthouse at dusk, oil painting --ar 3:2 --no text, watermark",
    "/imagine four koi in a pond --n 4",
)
"""Shown by /help; a test checks that each one parses under the default limits."""


def help_text(limits: LimitsSettings, *, typed: bool = False) -> str:
    """/help: the commands of `bot.command_table.COMMAND_TABLE` with their usage (`typed`: as written
    on a text-only platform), the operators' commands under their own heading, then every flag the
    parser accepts (from `bot.command_parser.FLAGS`), the settings, the limits and examples; all from
    the tables the commands are read with, so help cannot drift from them."""
    said = {c.name: f"{usage(c, typed=typed)}: {c.description}" for c in COMMAND_TABLE}
    lines = [
        "majicbot draws pictures from your words on a local GPU (majicflus, a FLUX.1 model).",
        "",
        "Commands:",
        *(said[c.name] for c in COMMAND_TABLE if not c.operators_only),
        "",
        "For the bot's operators only (admin_user_ids in its config):",
        *(said[c.name] for c in COMMAND_TABLE if c.operators_only),
        "",
        "Flags (write them after the prompt; --flag=value works too):",
        *(f"  {flag.help_line(limits)}" for flag in FLAGS),
        "",
        "Start from a picture: send it with /imagine <prompt> as its caption, or answer a picture with "
        "/imagine <prompt> (on Discord: the image option). Under a picture: Vary (Subtle or Strong) draws "
        "it again close to it, Upscale 2x makes it larger; under several, U1.. upscales and V1.. varies "
        "picture 1...",
        "",
        f"Your defaults (/settings): {', '.join(SettingName)}; e.g. /settings ar 16:9, /settings reset. "
        "A flag on a command overrides them.",
        "",
        f"Limits: prompts up to {limits.max_prompt_length} characters; "
        f"{_count(limits.max_active_jobs_per_user, 'picture')} waiting or running per person.",
        "",
        "Examples:",
        *(f"  {example}" for example in HELP_EXAMPLES),
    ]
    return "\n".join(lines) + "\n"


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + ELLIPSIS


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, keeping its lines (unlike `shorten`), ending in an
    ellipsis when cut: for a message's length limit."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def format_duration(seconds: float) -> str:
    """Rough, human durations: "12 s", "3 min 20 s", "1 h 5 min"."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def eta_phrase(eta_s: float | None) -> str:
    """ " (about 2 min)" or "" while no timings are known yet."""
    return "" if eta_s is None else f" (about {format_duration(eta_s)})"


def queued_text(queued: Queued) -> str:
    """The immediate reply to /imagine or /reroll."""
    job = queued.job
    lead = f"Job #{job.id}" if queued.created else f"You already asked for this: job #{job.id}"
    return f"{lead} {_standing(queued)}."


def queued_batch_text(batch: Sequence[Queued]) -> str:
    """One reply to several commands in a busy group: a line per job, with whose it is."""
    return "\n".join(f"{queued.job.requester.user_name}: {queued_text(queued)}" for queued in batch)


def queued_press_text(queued: Queued) -> str:
    """The short answer to a button press that queued a job (Reroll, Try again, Vary, Upscale), or
    found it queued already (a second press queues nothing)."""
    lead = "Queued as" if queued.created else "Already queued as"
    return f"{lead} job #{queued.job.id}."


def _standing(queued: Queued) -> str:
    if queued.position == 0:
        return f"is running{eta_phrase(queued.eta_s)}"
    ahead = "nothing ahead of it" if queued.jobs_ahead == 0 else _count(queued.jobs_ahead, "job") + " ahead"
    return f"is queued at position {queued.position}, {ahead}{eta_phrase(queued.eta_s)}"


def progress_text(job: Job, eta_s: float | None, position: int | None = None) -> str:
    """The status line a presenter edits while a job waits and runs."""
    if job.status is JobStatus.RUNNING:
        if job.progress_step <= 0:
            return f"Job #{job.id} is starting{eta_phrase(eta_s)}."
        left = "" if eta_s is None else f", about {format_duration(eta_s)} left"
        return f"Job #{job.id}: step {job.progress_step} of {job.progress_total}{left}."
    if job.status is JobStatus.QUEUED:
        where = "" if position is None else f" at position {position}"
        return f"Job #{job.id} is queued{where}{eta_phrase(eta_s)}."
    return final_status_text(job)


def final_status_text(job: Job) -> str:
    """One line for a finished job's status message."""
    if job.status is JobStatus.DONE:
        took = "" if job.duration_s is None else f" in {format_duration(job.duration_s)}"
        return f"Job #{job.id} is done{took}."
    if job.status is JobStatus.CANCELLED:
        return cancelled_text(job)
    if job.status is JobStatus.FAILED:
        return failure_text(job)
    return f"Job #{job.id} is {job.status.value}."


def failure_text(job: Job) -> str:
    """Why a job failed, in one line a user can act on (never the operator's error text)."""
    reason = FAILURE_REASONS[job.failure_kind or FailureKind.ERROR]
    return f"Job #{job.id} failed: {reason}"


def ready_later_text(job: Job) -> str:
    """Delivery gave up after a long outage of the chat platform: the picture waits on the server."""
    return (
        f"Job #{job.id} ({shorten(job.request.prompt, 60)}) is done, but I could not post the picture "
        f"for a long time. Send /show {job.id} to get it."
    )


def expired_text(job_id: int) -> str:
    """A job whose picture was deleted by the retention setting."""
    return (
        f"The picture of job #{job_id} has expired and was deleted from the server; "
        "its Reroll button draws it again with a new seed."
    )


def cancelled_text(job: Job) -> str:
    return f"Cancelled job #{job.id} ({shorten(job.request.prompt, 60)})."


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact of a finished picture: a label and value (Discord's embed fields) and the same as a
    phrase (Telegram's caption line)."""

    label: str
    value: str
    phrase: str
    free_text: bool = False  # the user's words, of any length: a line of its own where there is room


def picture_facts(job: Job, images: int = 1) -> list[Fact]:
    """What both platforms show under a finished picture, in this order: seed, steps, size, seconds,
    job id, how many images were posted, what made it, strength and what was left out."""
    request = job.request
    facts = [
        Fact("Seed", str(request.seed), f"seed {request.seed}"),
        Fact("Steps", str(request.steps), f"{request.steps} steps"),
        Fact("Size", f"{request.width}x{request.height}", f"{request.width}x{request.height}"),
    ]
    if job.duration_s is not None:
        facts.append(Fact("Time", f"{job.duration_s:.1f} s", f"{job.duration_s:.1f} s"))
    facts.append(Fact("Job", f"#{job.id}", f"job #{job.id}"))
    if images > 1:
        facts.append(Fact("Images", f"{images} (U upscales, V varies image n)", f"{images} images"))
    origin = lineage_text(job)
    if origin is not None:
        facts.append(Fact("Made by", origin, origin))
    if request.strength is not None:
        facts.append(Fact("Strength", f"{request.strength:g}", f"strength {request.strength:g}"))
    if request.negative_prompt:
        left_out = shorten(request.negative_prompt, 1000)
        facts.append(Fact("Leave out", left_out, f"without {shorten(left_out, 100)}", free_text=True))
    return facts


def caption(job: Job, limit: int, images: int = 1) -> str:
    """The prompt (shortened to fit) over the picture's facts in one line, within `limit` characters."""
    params = " · ".join(fact.phrase for fact in picture_facts(job, images))
    room = limit - len(params) - 1
    if room < 10:
        return shorten(params, limit)
    return f"{shorten(job.request.prompt, room)}\n{params}"


def details_text(job: Job) -> str:
    """Everything about a job, for the Details button: full prompt and parameters."""
    request = job.request
    lines = [f"Prompt: {request.prompt}"]
    if request.negative_prompt:
        lines.append(f"Leave out (--no): {request.negative_prompt}")
    lines += [
        f"Seed: {request.seed}",
        f"Steps: {request.steps}",
        f"Size: {request.width}x{request.height}",
        f"Guidance: {request.guidance:g}",
        f"Job: #{job.id}",
    ]
    origin = lineage_text(job)
    if origin is not None:
        lines.append(f"Made by: {origin}")
    if request.count > 1:
        lines.append(f"Images: {request.count} (seeds counting up from {request.seed})")
    if request.strength is not None:
        lines.append(f"Strength: {request.strength:g} (0.1 stays close to its image, 1.0 keeps the idea)")
    lines += [
        f"By: {job.requester.user_name}",
        f"Status: {job.status.value}",
    ]
    if job.duration_s is not None:
        lines.append(f"Took: {job.duration_s:.1f} s")
    lines.append(f"The same picture again: {rerun_command(job)}")
    return "\n".join(lines)


def rerun_command(job: Job) -> str:
    """The /imagine line that draws exactly this job's picture again, on either platform and by anyone
    (/reroll without a job id would re-run the user's last job instead)."""
    request = job.request
    line = (
        f"/imagine {request.prompt} --seed {request.seed} --steps {request.steps} "
        f"--size {request.width}x{request.height}"
    )
    # --no last: it takes every word up to the next flag.
    return f"{line} --no {request.negative_prompt}" if request.negative_prompt else line


def history_line(job: Job, prompt_limit: int = 60) -> str:
    """One /history entry: id, shortened prompt, seed, size, how many images, what made it (when not
    a plain /imagine) and, unless done, the status."""
    status = "" if job.status is JobStatus.DONE else f" · {job.status.value}"
    count = f" · {job.request.count} images" if job.request.count > 1 else ""
    origin = lineage_text(job)
    made = "" if origin is None else f" · {origin}"
    return (
        f"#{job.id} {shorten(job.request.prompt, prompt_limit)} · seed {job.request.seed} · "
        f"{job.request.width}x{job.request.height}{count}{made}{status}"
    )


_ORIGIN_WORDS: dict[JobOrigin, str] = {
    JobOrigin.REROLL: "reroll",
    JobOrigin.VARY_SUBTLE: "vary (subtle)",
    JobOrigin.VARY_STRONG: "vary (strong)",
    JobOrigin.UPSCALE: "upscale 2x",
    JobOrigin.IMAGE_PROMPT: "from your image",
}


def lineage_text(job: Job) -> str | None:
    """What made the job and from which picture ("vary (strong) of #9 image 2"); None for a plain
    /imagine."""
    # Rows from before lineage was recorded have a parent only when they were rerolls.
    words = _ORIGIN_WORDS.get(job.origin, "reroll" if job.parent_id is not None else None)
    if words is None:
        return None
    if job.parent_id is None:
        return words
    image = "" if job.parent_image_index is None else f" image {job.parent_image_index + 1}"
    return f"{words} of #{job.parent_id}{image}"


def history_text(jobs: Sequence[Job]) -> str:
    if not jobs:
        return "You have no pictures yet. Try: /imagine a lighthouse at dusk"
    return "Your latest pictures:\n" + "\n".join(history_line(job) for job in jobs)


def quota_text(limit: int, active: Sequence[Job]) -> str:
    listed = ", ".join(f"#{job.id} ({job.status.value})" for job in active)
    return (
        f"You already have {_count(len(active), 'job')} waiting or running ({listed}); the limit is "
        f"{limit}. Wait for one to finish, or stop one with /cancel."
    )


def queue_text(overview: QueueOverview) -> str:
    """The /queue answer: what runs, how many wait, and where the asker's jobs stand."""
    lines: list[str] = []
    if overview.running:
        running = ", ".join(
            f"#{job.id} (step {job.progress_step} of {job.progress_total})" for job in overview.running
        )
        lines.append(f"Running: {running}.")
    else:
        lines.append("Nothing is running.")
    lines.append(f"Waiting: {_count(overview.queued_total, 'job')}.")
    if overview.mine:
        lines.append("Yours:")
        lines += [f"  Job #{queued.job.id} {_standing(queued)}." for queued in overview.mine]
    else:
        lines.append("You have nothing queued.")
    return "\n".join(lines)


def banned_text(ban: Ban) -> str:
    """The operator's answer to /ban."""
    reason = f" (reason: {ban.reason})" if ban.reason else ""
    return (
        f"Banned user {ban.user_id}{reason}: every command of theirs is refused from now on. Jobs they "
        f"already queued stay (/cancel <job id> stops one). /unban {ban.user_id} lifts the ban."
    )


def unbanned_text(ban: Ban) -> str:
    return f"Unbanned user {ban.user_id}: they can use the bot again."


def bans_text(bans: Sequence[Ban]) -> str:
    """/bans: who is banned on this platform, newest first."""
    if not bans:
        return "No one is banned."
    lines = [
        f"{ban.user_id}: since {ban.banned_at:%Y-%m-%d %H:%M} UTC, by {ban.banned_by}"
        + (f", reason: {ban.reason}" if ban.reason else "")
        for ban in bans
    ]
    return "\n".join([f"Banned users ({len(bans)}, newest first):", *lines, "/unban <user id> lifts a ban."])


STORAGE_FULL = (
    "I cannot take new pictures right now: the bot's server has run out of disk space, so nothing was "
    "queued. The bot's operator needs to free some space; your finished pictures are safe."
)
STORAGE_FULL_CANCEL = (
    "I cannot cancel anything right now: the bot's server has run out of disk space. "
    "The bot's operator needs to free some space."
)
STORAGE_BUSY = "My database is busy right now, so nothing was queued. Send the command again in a minute."


def unexpected_error_text(error: BaseException | None) -> str:
    """The reply when a command failed in a way nobody foresaw; a full disk is still named as such."""
    if isinstance(error, StorageFull):
        return STORAGE_FULL
    return "Sorry, something went wrong on my side. Try again in a moment."


UNKNOWN_BUTTON = "This button is from an older version of the bot and no longer works."
OTHERS_MENU = "These are someone else's settings; send /settings for yours."
SENDING_ORIGINAL = "Sending the original PNG…"


def original_caption(job: Job) -> str:
    """What the original PNG files of `job` are sent with (Original PNG button)."""
    return f"Original PNG of job #{job.id} (lossless)."


def unknown_command_text(name: str) -> str:
    return f"I don't know /{name}. Send /help for what I can do."


def deleted_text(job: Job) -> str:
    """Said once the picture of `job` is taken down (its Delete button)."""
    return f"Deleted job #{job.id}'s image."


def not_allowed_text() -> str:
    """The one polite line for someone outside the allowlists."""
    return "Sorry, this bot is not available to you here."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
