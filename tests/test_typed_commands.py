"""Typed commands (`bot.typed_commands`) and the door every event passes (`bot.entrance`)."""

from __future__ import annotations

import logging

import pytest

from bot import texts
from bot.access import AccessPolicy, Caller, Place
from bot.chat_commands import Answer, Refused, Reply
from bot.entrance import ChatEntrance, serve
from bot.errors import Banned, InvalidRequest
from bot.standing import Queued
from bot.telegram import TELEGRAM
from bot.typed_commands import CommandLine, read_command_line, read_options
from storage.errors import StorageFull
from storage.jobs import Requester
from storage.queue import JobQueue
from tests.support.new_jobs import NewJobFactory


def test_a_command_line_is_split_as_telegram_marks_commands() -> None:
    assert read_command_line("/imagine a fox --ar 16:9") == CommandLine("imagine", "", "a fox --ar 16:9")
    assert read_command_line("/Imagine@MajicBot\na fox ") == CommandLine("imagine", "MajicBot", "a fox")
    assert read_command_line("/imagine,a fox") == CommandLine("imagine", "", ",a fox")
    assert read_command_line("a fox /imagine") is None and read_command_line("") is None
    line = read_command_line("/show@otherbot 4")
    assert line is not None and not line.is_for("majicbot") and line.is_for("OTHERBOT")
    assert CommandLine("show", "", "4").is_for("majicbot")


def test_typed_options_are_read_into_the_tables_names() -> None:
    assert read_options("reroll", "").values == {"seed": None, "job": None}
    assert read_options("reroll", "1234 #42").values == {"seed": 1234, "job": 42}
    assert read_options("cancel", "#7").values == {"job": 7}
    assert read_options("settings", "reset").values == {"reset": True}
    assert read_options("settings", "ar 16:9").values == {"reset": False, "ar": "16:9"}
    assert read_options("ban", " 42 spamming the queue").values == {
        "user": "42",
        "reason": "spamming the queue",
    }
    assert read_options("history", "whatever").values == {}
    with pytest.raises(InvalidRequest, match="/reroll <seed>"):
        read_options("reroll", "banana")
    with pytest.raises(InvalidRequest, match="/reroll <seed>"):
        read_options("reroll", "1 2 3")
    with pytest.raises(InvalidRequest, match="out of range"):
        read_options("reroll", "1 0")


class _Bans:
    """Stands in for `ChatCommands.admit` (the ban list lives in the database)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    async def admit(self, caller: Caller) -> None:
        if self.error is not None:
            raise self.error


ANN = Requester(TELEGRAM, "5", "42", "ann")
POLICY = AccessPolicy(admin_user_ids=frozenset({1}), allowed_chat_ids=frozenset({5}))


def _entrance(error: Exception | None = None, *, explain: bool) -> ChatEntrance:
    return ChatEntrance(_Bans(error), POLICY, explain_refusals=explain)  # type: ignore[arg-type]


async def test_the_entrance_admits_refuses_and_says_why_where_the_platform_wants() -> None:
    assert await _entrance(explain=True).admit(Place(42, 5, private=False), ANN) == Caller(ANN, False)
    elsewhere = Place(42, 6, private=False)
    explained = await _entrance(explain=True).admit(elsewhere, ANN)
    assert isinstance(explained, Refused) and "channel" in explained.text
    assert await _entrance(explain=False).admit(elsewhere, ANN) == Refused(texts.not_allowed_text())
    banned = _entrance(Banned("You are banned: spam"), explain=False)
    assert await banned.admit(Place(42, 5, private=False), ANN) == Refused("You are banned: spam")
    assert await _entrance(explain=True).admit(Place(1, 6, private=False), ANN) == Caller(ANN, True)


async def test_the_entrance_answers_a_failed_ban_check(caplog: pytest.LogCaptureFixture) -> None:
    refused = await _entrance(StorageFull("disk"), explain=False).admit(Place(42, 5, private=False), ANN)
    assert refused == Refused(texts.unexpected_error_text(StorageFull("disk")))
    assert "entrance check" in caplog.text


async def test_serve_turns_every_outcome_into_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    rendered: list[Answer] = []

    async def render(answer: Answer) -> None:
        if answer == Reply("cannot be shown"):
            raise RuntimeError("the platform refused")
        rendered.append(answer)

    async def fine() -> Answer:
        return Reply("done")

    async def mistake() -> Answer:
        raise InvalidRequest("Write it so.")

    async def broken() -> Answer:
        raise RuntimeError("bug")

    async def unshowable() -> Answer:
        return Reply("cannot be shown")

    caplog.set_level(logging.ERROR)
    for call in (fine, mistake, broken, unshowable):
        await serve(call, render, "test call")
    apology = Refused(texts.unexpected_error_text(None))
    assert rendered == [Reply("done"), Refused("Write it so."), apology, apology]
    assert [r.getMessage() for r in caplog.records] == ["test call failed"] * 2
    assert all(r.exc_info for r in caplog.records)  # the traceback is logged; the user sees none


async def test_serve_never_answers_a_queued_job_with_try_again(
    queue: JobQueue, make_new_job: NewJobFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that was queued stays queued: if its answer cannot be shown, "try again" would queue a
    second one, so the failure is logged with the job id and nothing else is said."""
    queued = Queued((await queue.enqueue(make_new_job())).job, 1, 0, None, created=True)
    rendered: list[Answer] = []

    async def render(answer: Answer) -> None:
        if isinstance(answer, Queued):
            raise RuntimeError("the status line could not be opened")
        rendered.append(answer)

    async def imagine() -> Answer:
        return queued

    caplog.set_level(logging.ERROR)
    await serve(imagine, render, "test call")
    assert rendered == []
    logged = [r for r in caplog.records if r.name == "bot.entrance"]
    assert [r.getMessage() for r in logged] == [
        f"job={queued.job.id} is queued, but its answer could not be shown"
    ]
    assert logged[0].exc_info  # with the traceback, for the operator
