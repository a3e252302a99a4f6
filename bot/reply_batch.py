"""Answers to a burst of commands in one busy chat, sent as one message.

A group may get only a few messages a minute (Telegram: about 20), so a burst of commands there would
wait minutes for their answers one by one. `ReplyBatcher` collects the answers that arrive within
`batch_s` of the first one in the same chat and sends them with one call; a chat that needs no batching
(a private chat) is sent at once. `add` returns once its batch was sent (or given up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Batch(Generic[T]):
    items: list[T] = field(default_factory=list)
    sent: asyncio.Event = field(default_factory=asyncio.Event)


class ReplyBatcher(Generic[T]):
    def __init__(self, send: Callable[[list[T]], Awaitable[None]], *, batch_s: float) -> None:
        self._send = send
        self._batch_s = batch_s
        self._open: dict[Hashable, _Batch[T]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def add(self, chat: Hashable, item: T, *, batch: bool = True) -> None:
        """Send `item` with whatever else `chat` gets within `batch_s` (or alone, at once)."""
        if not batch or self._batch_s <= 0:
            await self._send([item])
            return
        pending = self._open.get(chat)
        if pending is None:
            pending = self._open[chat] = _Batch()
            task = asyncio.create_task(self._flush_later(chat, pending), name="reply-batch")
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        pending.items.append(item)
        await pending.sent.wait()

    async def close(self) -> None:
        """Send what is waiting now (on shutdown)."""
        for task in list(self._flushing):
            task.cancel()
        batches, self._open = list(self._open.values()), {}
        for pending in batches:
            await self._send(pending.items)
            pending.sent.set()

    async def _flush_later(self, chat: Hashable, pending: _Batch[T]) -> None:
        await asyncio.sleep(self._batch_s)
        if self._open.get(chat) is pending:
            del self._open[chat]
        try:
            await self._send(pending.items)
        finally:
            pending.sent.set()
