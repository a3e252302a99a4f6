"""The Telegram rate limiter on its own: what counts, who goes first, what is dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.telegram.rate_limiter import Limits, Priority, PriorityRateLimiter, ProgressDropped

GROUP = -100
PRIVATE = 7


class Recorder:
    def __init__(self, limits: Limits) -> None:
        self.limiter = PriorityRateLimiter(limits)
        self.sent: list[str] = []

    async def send(
        self, name: str, priority: Priority | None, *, chat: int = GROUP, method: str = "sendMessage"
    ) -> Any:
        async def call(label: str) -> bool:
            self.sent.append(label)
            return True

        return await self.limiter.process_request(call, (name,), {}, method, {"chat_id": chat}, priority)


async def test_answers_go_before_waiting_images_and_progress_is_dropped_when_saturated() -> None:
    # A group allows 3 messages per 0.3 s here; images leave 1 slot free, progress 2.
    group = Recorder(Limits(group_messages=3, group_period_s=0.3, group_reserve=(0, 1, 2)))
    await group.send("answer 1", Priority.REPLY)
    with pytest.raises(ProgressDropped):
        await group.send("progress", Priority.PROGRESS)
    await group.send("image 1", Priority.RESULT)
    waiting_image = asyncio.create_task(group.send("image 2", Priority.RESULT))
    await asyncio.sleep(0)  # it queues behind the reserve
    assert group.sent == ["answer 1", "image 1"]
    await group.send("answer 2", None)  # calls without a priority are answers
    async with asyncio.timeout(5):
        await waiting_image
    assert group.sent == ["answer 1", "image 1", "answer 2", "image 2"]


async def test_deletes_are_not_counted_and_private_chats_have_no_group_limit() -> None:
    recorder = Recorder(Limits(group_messages=1, group_period_s=60.0, group_reserve=(0, 0, 0)))
    await recorder.send("answer", Priority.REPLY)
    async with asyncio.timeout(1):
        await recorder.send("delete", Priority.RESULT, method="deleteMessage")
        for n in range(5):
            await recorder.send(f"private {n}", Priority.PROGRESS, chat=PRIVATE)
    with pytest.raises(ProgressDropped):
        await recorder.send("typing…", None, method="sendChatAction")
    assert recorder.sent == ["answer", "delete", *(f"private {n}" for n in range(5))]
