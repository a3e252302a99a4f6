"""Inline buttons. callback_data holds only an action and a job id; the rest is read from the database,
so a button still works after the bot restarts."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from storage.jobs import Job

MAX_CALLBACK_BYTES = 64


class Action(enum.StrEnum):
    REROLL = "reroll"  # the same prompt with a new random seed
    RETRY = "retry"  # a failed job again, same seed
    ORIGINAL = "png"  # the lossless PNG as a document
    DELETE = "delete"  # remove the image message (owner or admin)


@dataclass(frozen=True, slots=True)
class ButtonPress:
    action: Action
    job_id: int


def callback_data(action: Action, job_id: int) -> str:
    data = f"{action.value}:{job_id}"
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    return data


def parse_callback_data(data: str | None) -> ButtonPress | None:
    """The press behind `data`, or None for data this bot never made (old or forged buttons)."""
    if not data:
        return None
    action, _, job = data.partition(":")
    try:
        return ButtonPress(Action(action), int(job))
    except ValueError:
        return None


def result_keyboard(job: Job) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("🎲 Reroll", callback_data=callback_data(Action.REROLL, job.id)),
                InlineKeyboardButton("🖼 Original PNG", callback_data=callback_data(Action.ORIGINAL, job.id)),
                InlineKeyboardButton("🗑 Delete", callback_data=callback_data(Action.DELETE, job.id)),
            ]
        ]
    )


def retry_keyboard(job: Job) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton("🔁 Retry", callback_data=callback_data(Action.RETRY, job.id))]]
    )


def history_keyboard(jobs: Sequence[Job]) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(f"🎲 #{job.id}", callback_data=callback_data(Action.REROLL, job.id))
        for job in jobs
    ]
    return InlineKeyboardMarkup([buttons[start : start + 5] for start in range(0, len(buttons), 5)])
