"""`bot.frontend.ChatFrontend`'s share of every adapter's life: the receiver it starts (ready, ended,
awaited on stop) and the answers still being written when it stops (`bot.answers_in_flight`).

A frontend whose "platform" is a few asyncio primitives stands in for a real one; the real ones are run
against their emulators in tests/test_discord_*.py and tests/test_telegram_*.py.
"""

from __future__ import annotations

import asyncio

import pytest

from bot import frontend
from bot.answers_in_flight import AnswersInFlight
from bot.frontend import ChatFrontend
from bot.service import BotService
from storage.images import ImageStore
from storage.queue import JobQueue
from tests.support.services import build_service
from tests.support.silent_presenter import SilentPresenter

WAIT_S = 5.0


class WireFrontend(ChatFrontend[SilentPresenter]):
    """A platform whose gateway is a task that runs until `hang_up` (or `fail`), and is ready once
    `ready` is set."""

    name = "wire"

    def __init__(self, service: BotService) -> None:
        super().__init__(["wire-token"], ("wire",))
        self._presenter = SilentPresenter(service)
        self.ready = asyncio.Event()
        self.hang_up = asyncio.Event()
        self.failure: BaseException | None = None
        self.events: list[str] = []

    async def _gateway(self) -> None:
        await self.hang_up.wait()
        self.events.append("gateway ended")
        if self.failure is not None:
            raise self.failure

    async def _connect(self) -> None:
        self._start_receiver(self._gateway(), name="wire-gateway")
        problem = await self._until_ready(self.ready.wait(), 0.2)
        if problem is not None:
            await self.stop()
            raise frontend.FrontendStartError(self._fatal.reason or f"not ready ({problem})")

    async def _disconnect(self) -> None:
        self.events.append("disconnect")
        self.hang_up.set()

    def _ended_reason(self, error: BaseException | None) -> str:
        return f"the wire ended ({error!r})"

    @property
    def is_running(self) -> bool:
        return self._receiving

    async def answer(self, finish: asyncio.Event) -> None:
        """An event's answer, written until `finish` is set (as an adapter's handler would)."""
        with self._answers.tracking():
            await finish.wait()
            self.events.append("answered")


@pytest.fixture
def service(queue: JobQueue, image_store: ImageStore) -> BotService:
    return build_service(queue, image_store)


async def test_stop_lets_an_answer_in_flight_finish_before_disconnecting(service: BotService) -> None:
    wire = WireFrontend(service)
    wire.ready.set()
    await wire.start()
    assert wire.is_running
    finish = asyncio.Event()
    answering = asyncio.create_task(wire.answer(finish))
    await asyncio.sleep(0)  # the handler runs up to its wait
    stopping = asyncio.create_task(wire.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done() and wire.events == []  # still connected: the answer is not written yet
    finish.set()
    async with asyncio.timeout(WAIT_S):
        await stopping
    await answering
    assert wire.events == ["answered", "disconnect", "gateway ended"]  # the gateway was awaited too
    assert not wire.is_running


async def test_an_answer_that_never_ends_delays_stopping_only_as_long_as_the_bound(
    service: BotService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "STOP_TIMEOUT_S", 0.1)
    wire = WireFrontend(service)
    wire.ready.set()
    await wire.start()
    answering = asyncio.create_task(wire.answer(asyncio.Event()))
    await asyncio.sleep(0)
    async with asyncio.timeout(WAIT_S):
        await wire.stop()
    assert wire.events == ["disconnect", "gateway ended"]
    answering.cancel()


async def test_a_receiver_ending_by_itself_is_fatal_and_not_once_stopping(service: BotService) -> None:
    wire = WireFrontend(service)
    wire.ready.set()
    await wire.start()
    wire.failure = ConnectionError("token revoked")
    wire.hang_up.set()
    async with asyncio.timeout(WAIT_S):
        reason = await wire.fatal_error()
    assert reason == "the wire ended (ConnectionError('token revoked'))"
    assert not wire.is_running
    await wire.stop()  # the receiver's error was seen already; stopping is quiet

    calm = WireFrontend(service)
    calm.ready.set()
    await calm.start()
    await calm.stop()
    assert not calm._fatal.is_set()


async def test_a_receiver_that_ends_or_stays_silent_before_ready_fails_the_start(
    service: BotService,
) -> None:
    closed = WireFrontend(service)
    closed.failure = PermissionError("refused")
    closed.hang_up.set()
    with pytest.raises(frontend.FrontendStartError, match="the wire ended"):
        await closed.start()

    silent = WireFrontend(service)
    with pytest.raises(frontend.FrontendStartError, match=r"not ready \(no answer\)"):
        await silent.start()
    assert silent.events == ["disconnect", "gateway ended"]


async def test_answers_in_flight_drains_others_never_itself() -> None:
    answers = AnswersInFlight()
    done = asyncio.Event()

    async def answering() -> None:
        with answers.tracking():
            await done.wait()

    task = asyncio.create_task(answering())
    await asyncio.sleep(0)
    assert len(answers) == 1
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, done.set)
    async with asyncio.timeout(WAIT_S):
        await answers.drain(WAIT_S)
    assert task.done() and len(answers) == 0

    with answers.tracking():  # an answer that stops the adapter does not wait for itself
        async with asyncio.timeout(WAIT_S):
            await answers.drain(WAIT_S)
