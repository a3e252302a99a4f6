"""`bot.acknowledgements`: the answer to a queued job, sent once (retried on the network only), batched
in busy chats, and attached as the job's status line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot import acknowledgements
from bot.acknowledgements import Acknowledger
from bot.standing import Queued
from storage.images import ImageStore
from storage.jobs import Job, Platform
from storage.queue import JobQueue
from tests.support.new_jobs import NewJobFactory
from tests.support.services import build_service
from tests.support.silent_presenter import SilentPresenter

CHAT = Platform("chat")  # a platform that records what it is asked


class Flaky(Exception):
    pass


class Refused(Exception):
    pass


class QuietPresenter(SilentPresenter):
    platform = CHAT
    activity_every_s = 4.0

    signals: int = 0

    async def _signal_activity(self, job: Job) -> bool:
        self.signals += 1
        return True


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acknowledgements, "RETRY_PAUSE_S", 0.0)


async def test_a_network_failure_is_retried_and_the_answer_becomes_the_status_line(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = QuietPresenter(build_service(queue, image_store))
    job = (await queue.enqueue(make_new_job(platform=CHAT))).job
    sent: list[tuple[str, str]] = []

    async def send(command: str, text: str) -> int:
        if not sent:
            sent.append(("lost", text))
            raise Flaky("connection reset")
        sent.append((command, text))
        return 77

    acks = Acknowledger(presenter, send, retryable=lambda error: isinstance(error, Flaky), batch_s=0.0)
    await acks.acknowledge("command 5", Queued(job, 1, 0, None, True), chat=100, batch=False)
    assert [command for command, _ in sent] == ["lost", "command 5"]
    assert sent[1][1].startswith(f"Job #{job.id} is queued at position 1")
    assert (await queue.get(job.id)).status_message_id == "77"
    assert presenter.signals == 1


async def test_a_refused_answer_is_given_up_at_once_and_only_logged(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory, caplog: pytest.LogCaptureFixture
) -> None:
    presenter = QuietPresenter(build_service(queue, image_store))
    job = (await queue.enqueue(make_new_job(platform=CHAT))).job
    attempts = 0

    async def send(command: str, text: str) -> int:
        nonlocal attempts
        attempts += 1
        raise Refused("bot was blocked by the user")

    acks = Acknowledger(presenter, send, retryable=lambda error: isinstance(error, Flaky))
    with caplog.at_level(logging.WARNING, logger="bot.acknowledgements"):
        await acks.acknowledge("command", Queued(job, 1, 0, None, True), chat=100, batch=False)
    assert attempts == 1
    assert f"job={job.id} queued, but the answer was not sent" in caplog.text
    assert (await queue.get(job.id)).status_message_id is None


async def test_answers_in_a_busy_chat_share_one_message(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = QuietPresenter(build_service(queue, image_store))
    first = (await queue.enqueue(make_new_job(platform=CHAT, user_id="1", user_name="ann"))).job
    second = (await queue.enqueue(make_new_job(platform=CHAT, user_id="2", user_name="bob"))).job
    sent: list[str] = []

    async def send(command: str, text: str) -> int:
        sent.append(text)
        return 90

    acks = Acknowledger(presenter, send, retryable=lambda error: False, batch_s=60.0)
    asks = [
        asyncio.create_task(acks.acknowledge("command", queued, chat=-100, batch=True))
        for queued in (Queued(first, 1, 0, None, True), Queued(second, 2, 1, None, True))
    ]
    await asyncio.sleep(0)  # both wait in the chat's batch
    assert sent == []
    async with asyncio.timeout(5):
        await acks.close()  # sends what waits, now
        await asyncio.gather(*asks)
    assert len(sent) == 1 and "ann: Job #" in sent[0] and "bob: Job #" in sent[0]
    # One message for two jobs shows neither one's progress.
    assert (await queue.get(first.id)).status_message_id is None
