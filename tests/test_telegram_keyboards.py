"""Inline buttons carry only an action and a job id, within Telegram's 64 bytes."""

from __future__ import annotations

import pytest

from bot.telegram.keyboards import (
    MAX_CALLBACK_BYTES,
    Action,
    ButtonPress,
    callback_data,
    parse_callback_data,
)


@pytest.mark.parametrize("action", list(Action))
def test_callback_data_round_trips_within_the_limit(action: Action) -> None:
    job_id = 2**63 - 1  # the largest id a database hands out
    data = callback_data(action, job_id)
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    assert parse_callback_data(data) == ButtonPress(action, job_id)


@pytest.mark.parametrize("data", [None, "", "reroll", "reroll:", "reroll:abc", "explode:1", ":1", "png:1:2"])
def test_foreign_callback_data_is_not_a_press(data: str | None) -> None:
    assert parse_callback_data(data) is None
