"""The one view of a job both platforms render: position, ETA, status line and buttons as data."""

from __future__ import annotations

import pytest

from bot.job_view import ButtonAction, ButtonPress, ButtonStyle, build_view, button_rows, history_buttons
from storage.jobs import FailureKind, ImageRequest, JobStatus, StoredImage
from tests.test_texts import make_job

RESULT_ACTIONS = (ButtonAction.REROLL, ButtonAction.DETAILS, ButtonAction.DELETE)


def test_a_queued_job_shows_its_position_and_eta_and_no_buttons() -> None:
    view = build_view(make_job(), position=3, jobs_ahead=2, eta_s=125.0, result_actions=RESULT_ACTIONS)
    assert (view.position, view.jobs_ahead, view.eta_s) == (3, 2, 125.0)
    assert view.status_line == "Job #12 is queued at position 3 (about 2 min 5 s)."
    assert view.buttons == ()


def test_a_running_job_is_at_position_zero_and_shows_its_step() -> None:
    starting = build_view(make_job(status=JobStatus.RUNNING), position=4, jobs_ahead=3, eta_s=None)
    assert (starting.position, starting.jobs_ahead) == (0, 0)
    assert starting.status_line == "Job #12 is starting."
    running = build_view(make_job(status=JobStatus.RUNNING, progress_step=5), eta_s=30.0)
    assert running.status_line == "Job #12: step 5 of 20, about 30 s left."


def test_a_done_job_offers_the_platforms_buttons_in_order() -> None:
    view = build_view(
        make_job(status=JobStatus.DONE, duration_s=12.0), eta_s=5.0, result_actions=RESULT_ACTIONS
    )
    assert (view.position, view.eta_s) == (None, None)
    assert view.status_line == "Job #12 is done in 12 s."
    # One image: Vary (Subtle), Vary (Strong), Upscale 2x on a row, then the platform's row.
    assert [(b.press.key, b.label, b.row) for b in view.buttons] == [
        ("vary:12", "Vary (Subtle)", 0),
        ("varystrong:12", "Vary (Strong)", 0),
        ("upscale:12", "Upscale 2x", 0),
        ("reroll:12", "Reroll", 1),
        ("details:12", "Details", 1),
        ("delete:12", "Delete", 1),
    ]
    assert [button.style for button in view.buttons][3:] == [
        ButtonStyle.PRIMARY,
        ButtonStyle.SECONDARY,
        ButtonStyle.DANGER,
    ]


def test_a_set_of_four_offers_u1_to_u4_and_v1_to_v4_and_one_reroll() -> None:
    images = tuple(StoredImage(f"12-{i}.png", "0" * 64, 100) for i in range(4))
    job = make_job(
        status=JobStatus.DONE, request=ImageRequest("a fox", 42, 20, 64, 64, 3.5, count=4), images=images
    )
    actions = (ButtonAction.REROLL, ButtonAction.ORIGINAL, ButtonAction.DELETE)
    view = build_view(job, result_actions=actions)
    assert [(b.label, b.press.key) for b in view.buttons] == [
        ("U1", "upscale:12"),
        ("U2", "upscale:12:2"),
        ("U3", "upscale:12:3"),
        ("U4", "upscale:12:4"),
        ("V1", "vary:12"),
        ("V2", "vary:12:2"),
        ("V3", "vary:12:3"),
        ("V4", "vary:12:4"),
        ("Reroll", "reroll:12"),  # one for the set
        ("Original PNG", "png:12"),  # every image's PNG
        ("Delete", "delete:12"),
    ]
    assert [ButtonPress.parse(b.press.key) for b in view.buttons][5] == ButtonPress(
        ButtonAction.VARY_SUBTLE, 12, 1
    )
    rows = button_rows(view.buttons, 5)
    assert [[b.label for b in row] for row in rows] == [
        ["U1", "U2", "U3", "U4"],
        ["V1", "V2", "V3", "V4"],
        ["Reroll", "Original PNG", "Delete"],
    ]


def test_buttons_without_a_row_flow_five_to_a_row() -> None:
    buttons = history_buttons([make_job(id=n) for n in range(1, 8)])
    assert [len(row) for row in button_rows(buttons, 5)] == [5, 2]


def test_a_failed_job_offers_only_a_retry_and_says_why() -> None:
    view = build_view(
        make_job(status=JobStatus.FAILED, failure_kind=FailureKind.TIMEOUT), result_actions=RESULT_ACTIONS
    )
    assert [button.press for button in view.buttons] == [ButtonPress(ButtonAction.RETRY, 12)]
    assert view.buttons[0].label == "Try again"
    assert view.status_line.startswith("Job #12 failed: it took too long")


def test_a_cancelled_job_has_no_buttons() -> None:
    view = build_view(make_job(status=JobStatus.CANCELLED), result_actions=RESULT_ACTIONS)
    assert view.buttons == ()
    assert view.status_line.startswith("Cancelled job #12 (a red fox")


def test_history_buttons_reroll_each_job_by_id() -> None:
    buttons = history_buttons([make_job(id=3), make_job(id=9)])
    assert [(b.press.key, b.label, b.emoji) for b in buttons] == [
        ("reroll:3", "#3", "🎲"),
        ("reroll:9", "#9", "🎲"),
    ]


@pytest.mark.parametrize("action", list(ButtonAction))
def test_button_keys_round_trip_within_telegrams_64_bytes(action: ButtonAction) -> None:
    press = ButtonPress(action, 2**63 - 1)  # the largest id a database hands out
    assert len(press.key.encode()) <= 64
    assert len(f"majicbot:{press.key}") <= 100  # Discord's custom_id limit
    assert ButtonPress.parse(press.key) == press


def test_keys_stay_what_posted_buttons_carry() -> None:
    # Buttons posted by earlier versions must still decode after an upgrade.
    assert [action.value for action in ButtonAction] == [
        "reroll",
        "retry",
        "details",
        "png",
        "delete",
        "vary",
        "varystrong",
        "upscale",
    ]
    assert ButtonPress.parse("upscale:42:2") == ButtonPress(ButtonAction.UPSCALE, 42, 1)
    assert ButtonPress(ButtonAction.VARY_STRONG, 42, 3).key == "varystrong:42:4"


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "reroll",
        "reroll:",
        "reroll:abc",
        "explode:1",
        ":1",
        "png:1:2",
        "reroll:-1",
        "reroll:١",
        "upscale:1:0",
        "upscale:1:10",
        "vary:1:x",
        "vary:1:2:3",
    ],
)
def test_foreign_keys_are_not_a_press(key: str | None) -> None:
    assert ButtonPress.parse(key) is None
