"""`bot.flood_control`'s sends: a platform's "too many requests" waited out and retried, progress
dropped instead, courtesies skipped while a group's budget is needed."""

from __future__ import annotations

import asyncio

import pytest

from bot.flood_control import FloodControl, Limits, Priority, SlotRefused

GROUP = -100


class TooMany(Exception):
    def __init__(self, pause_s: float) -> None:
        super().__init__(f"retry after {pause_s} s")
        self.pause_s = pause_s


def pause_of(error: Exception) -> float | None:
    return error.pause_s if isinstance(error, TooMany) else None


async def test_too_many_is_waited_out_and_retried_until_the_retries_run_out() -> None:
    flood = FloodControl(Limits(max_retries=2))
    answers: list[object] = [TooMany(0.05), "sent"]

    async def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, str)
        return answer

    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(5):
        assert await flood.send(GROUP, Priority.RESULT, call, pause_of=pause_of) == "sent"
    assert loop.time() - began >= 0.05  # the chat was held back before the second try

    answers = [TooMany(0.0)] * 3
    with pytest.raises(TooMany):
        async with asyncio.timeout(5):
            await flood.send(GROUP, Priority.REPLY, call, pause_of=pause_of)
    assert answers == []  # the first try and the two retries


async def test_progress_is_dropped_rather_than_retried_and_other_errors_pass_at_once() -> None:
    flood = FloodControl()
    calls = 0

    async def too_many() -> None:
        nonlocal calls
        calls += 1
        raise TooMany(30.0)

    with pytest.raises(SlotRefused):
        await flood.send(GROUP, Priority.PROGRESS, too_many, pause_of=pause_of)
    assert calls == 1

    async def broken() -> None:
        raise ValueError("not a flood error")

    with pytest.raises(ValueError, match="not a flood error"):
        await flood.send_uncounted(7, broken, pause_of=pause_of)


async def test_a_courtesy_is_skipped_while_the_group_is_held_back() -> None:
    flood = FloodControl()

    async def delete() -> str:
        raise TooMany(30.0)

    with pytest.raises(TooMany):
        await flood.send_uncounted(GROUP, delete, pause_of=pause_of)

    async def chat_action() -> str:
        return "shown"

    with pytest.raises(SlotRefused):
        await flood.send_uncounted(GROUP, chat_action, pause_of=pause_of, courtesy=True)
    assert await flood.send_uncounted(7, chat_action, pause_of=pause_of, courtesy=True) == "shown"
