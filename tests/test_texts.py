"""The sentences both adapters show: exact wording where users read it, limits where platforms cut it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from bot import texts
from bot.command_parser import FLAGS, parse_imagine
from bot.errors import InvalidRequest
from bot.settings import LimitsSettings
from bot.standing import Queued, QueueOverview
from bot.telegram import TELEGRAM
from storage.jobs import FailureKind, ImageRequest, Job, JobOrigin, JobStatus, Requester

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(**changes: object) -> Job:
    job = Job(
        id=12,
        requester=Requester(TELEGRAM, "100", "1", "alice"),
        request=ImageRequest("a red fox in the snow", 42, 20, 1024, 768, 3.5),
        parent_id=None,
        status=JobStatus.QUEUED,
        attempts=0,
        created_at=NOW,
        started_at=None,
        finished_at=None,
        delivered_at=None,
        progress_step=0,
        progress_total=20,
        error=None,
        failure_kind=None,
        result_path=None,
        result_sha256=None,
        duration_s=None,
        step_seconds=None,
        claimed_by=None,
        status_message_id=None,
        result_message_id=None,
        dedupe_key=None,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.4, "0 s"), (12.4, "12 s"), (60, "1 min"), (200, "3 min 20 s"), (3600, "1 h"), (3900, "1 h 5 min")],
)
def test_format_duration(seconds: float, words: str) -> None:
    assert texts.format_duration(seconds) == words


def test_shorten() -> None:
    assert texts.shorten("a  b\nc", 10) == "a b c"
    assert texts.shorten("abcdefghij", 5) == "abcd…"
    assert len(texts.shorten("x" * 5000, 1024)) == 1024


def test_clip_keeps_lines_and_cuts_to_the_limit() -> None:
    assert texts.clip("a  b\nc", 10) == "a  b\nc"
    assert texts.clip("line one\nline two", 10) == "line one\n…"
    assert len(texts.clip("x\n" * 3000, 2000)) == 2000


def test_queued_text() -> None:
    job = make_job()
    assert texts.queued_text(Queued(job, 1, 0, None, True)) == (
        "Job #12 is queued at position 1, nothing ahead of it."
    )
    assert texts.queued_text(Queued(job, 3, 2, 95, True)) == (
        "Job #12 is queued at position 3, 2 jobs ahead (about 1 min 35 s)."
    )
    running = make_job(status=JobStatus.RUNNING)
    assert texts.queued_text(Queued(running, 0, 0, 8, False)) == (
        "You already asked for this: job #12 is running (about 8 s)."
    )


def test_progress_text() -> None:
    assert texts.progress_text(make_job(), None, 2) == "Job #12 is queued at position 2."
    running = make_job(status=JobStatus.RUNNING, progress_step=7)
    assert texts.progress_text(running, 26.0) == "Job #12: step 7 of 20, about 26 s left."
    starting = make_job(status=JobStatus.RUNNING)
    assert texts.progress_text(starting, None) == "Job #12 is starting."


@pytest.mark.parametrize("kind", list(FailureKind))
def test_every_failure_kind_has_a_reason(kind: FailureKind) -> None:
    job = make_job(status=JobStatus.FAILED, failure_kind=kind, error="CUDA error: secret operator detail")
    line = texts.failure_text(job)
    assert line.startswith("Job #12 failed: ")
    assert "secret operator detail" not in line
    assert "\n" not in line


def test_caption_fits_the_limit_and_keeps_the_parameters() -> None:
    job = make_job(
        status=JobStatus.DONE, duration_s=12.34, request=ImageRequest("y" * 3000, 42, 20, 1024, 768, 3.5)
    )
    caption = texts.caption(job, 1024)
    assert len(caption) <= 1024
    assert caption.endswith("seed 42 · 20 steps · 1024x768 · 12.3 s · job #12")


def test_history_and_quota_and_queue() -> None:
    done = make_job(status=JobStatus.DONE)
    assert texts.history_line(done) == "#12 a red fox in the snow · seed 42 · 1024x768"
    assert texts.history_text([]) == "You have no pictures yet. Try: /imagine a lighthouse at dusk"
    assert texts.quota_text(1, [make_job()]) == (
        "You already have 1 job waiting or running (#12 (queued)); the limit is 1. "
        "Wait for one to finish, or stop one with /cancel."
    )
    overview = QueueOverview(running=(), queued_total=1, mine=(Queued(make_job(), 1, 0, None, False),))
    assert texts.queue_text(overview) == (
        "Nothing is running.\nWaiting: 1 job.\nYours:\n"
        "  Job #12 is queued at position 1, nothing ahead of it."
    )


def test_details_show_everything_needed_to_reproduce() -> None:
    job = make_job(parent_id=3, request=ImageRequest("a fox", 42, 20, 1024, 768, 3.5, "blur"))
    details = texts.details_text(job)
    for line in (
        "Prompt: a fox",
        "Leave out (--no): blur",
        "Seed: 42",
        "Size: 1024x768",
        "Made by: reroll of #3",
    ):
        assert line in details


@pytest.mark.parametrize(
    "request_",
    [
        ImageRequest("a fox", 42, 20, 1024, 768, 3.5, "blur, text"),
        ImageRequest("a quote —Einstein, on a wall", 0, 1, 256, 256, 3.5),
    ],
)
def test_details_name_the_command_that_draws_that_very_job_again(request_: ImageRequest) -> None:
    job = make_job(id=77, request=request_)
    command = texts.rerun_command(job)
    assert f"The same picture again: {command}" in texts.details_text(job)
    assert command.startswith("/imagine ")
    args = parse_imagine(command.removeprefix("/imagine "), LimitsSettings())
    again = (args.prompt, args.seed, args.steps, args.width, args.height, args.negative_prompt)
    assert again == (
        request_.prompt,
        request_.seed,
        request_.steps,
        request_.width,
        request_.height,
        request_.negative_prompt,
    )


# Flag names someone might add to the parser; the probe below finds which ones it takes.
CANDIDATE_FLAGS = (
    *(flag.name for flag in FLAGS),
    *("aspect", "negative", "width", "height", "guidance", "cfg", "n", "count", "style", "quality"),
    *("sampler", "scheduler", "model", "batch", "private", "spoiler", "hd", "q", "s", "w", "h"),
)


def _parser_takes(name: str) -> bool:
    try:
        parse_imagine(f"a cat --{name} 1", LimitsSettings())
    except InvalidRequest as error:
        return "not a flag I know" not in str(error)
    return True


def test_help_names_every_flag_the_parser_takes_and_its_limits() -> None:
    limits = LimitsSettings(max_steps=30, max_prompt_length=300, max_active_jobs_per_user=2)
    text = texts.help_text(limits)
    taken = {name for name in CANDIDATE_FLAGS if _parser_takes(name)}
    assert taken == {flag.name for flag in FLAGS}
    for name in taken:
        assert f"--{name} " in text, name
    assert "/imagine <prompt> [seed] [steps] [aspect] [negative] [n] [image] [strength]: Draw" in text
    assert "/help: The commands, the flags" in text
    assert "--steps N: 1 to 30;" in text
    assert "prompts up to 300 characters; 2 pictures waiting or running" in text


def test_help_names_the_settings_and_the_operators_commands_as_theirs() -> None:
    text = texts.help_text(LimitsSettings(), typed=True)
    assert "Your defaults (/settings): ar, steps, images, negative, style, progress;" in text
    operators = text.index("For the bot's operators only")
    assert text.index("/settings [negative] [style] [reset]: Your defaults") < operators
    assert operators < text.index("/ban <user> [reason]: Operators: refuse") < text.index("/bans: Operators")


def test_help_examples_are_valid_commands() -> None:
    for example in texts.HELP_EXAMPLES:
        assert example.startswith("/imagine ")
        parse_imagine(example.removeprefix("/imagine "), LimitsSettings())
    for flag in FLAGS:
        parse_imagine(f"a cat {flag.example}", LimitsSettings())


def test_the_embed_and_the_caption_show_the_same_facts_of_a_picture() -> None:
    job = make_job(
        status=JobStatus.DONE,
        duration_s=3.04,
        parent_id=9,
        origin=JobOrigin.VARY_STRONG,
        parent_image_index=1,
        request=ImageRequest("a fox", 42, 20, 1024, 768, 3.5, "blur, text", count=4, strength=0.6),
    )
    facts = texts.picture_facts(job, images=4)
    assert [(fact.label, fact.value) for fact in facts] == [
        ("Seed", "42"),
        ("Steps", "20"),
        ("Size", "1024x768"),
        ("Time", "3.0 s"),
        ("Job", "#12"),
        ("Images", "4 (U upscales, V varies image n)"),
        ("Made by", "vary (strong) of #9 image 2"),
        ("Strength", "0.6"),
        ("Leave out", "blur, text"),
    ]
    assert texts.caption(job, 1024, images=4) == (
        "a fox\nseed 42 · 20 steps · 1024x768 · 3.0 s · job #12 · 4 images · vary (strong) of #9 image 2 · "
        "strength 0.6 · without blur, text"
    )


def test_the_answers_to_a_press_and_the_original_png() -> None:
    job = make_job()
    assert texts.queued_press_text(Queued(job, 1, 0, None, created=True)) == "Queued as job #12."
    again = Queued(job, 1, 0, None, created=False)
    assert texts.queued_press_text(again) == "Already queued as job #12."
    assert texts.original_caption(job) == "Original PNG of job #12 (lossless)."
    assert texts.SENDING_ORIGINAL == "Sending the original PNG…"
