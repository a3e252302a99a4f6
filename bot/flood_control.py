"""Flood limits with priorities: answers first, finished pictures next, progress last.

Chat platforms allow a chat only so many messages per period (Telegram: about 20 a minute in a group)
and a bot only so many overall. Served in arrival order, the replies to commands and the pictures in a
busy group would wait behind progress edits. `FloodControl` serves each chat's waiting sends by
priority, keeps a few of a group's slots for the sends that matter more, and refuses a progress edit at
once (`SlotRefused`) when the group's budget is saturated rather than queueing it: a newer edit, or the
result itself, follows. An adapter passes each counted send through `send` (a "too many requests" from
the platform holds the chat back and is retried), and the others through `send_uncounted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

PauseOf = Callable[[Exception], float | None]
"""How long the platform asked to wait, when `error` is its "too many requests"; None for other errors."""


class Priority(enum.IntEnum):
    """Lower goes first."""

    REPLY = 0  # answers to commands and buttons
    RESULT = 1  # finished images, failure notices
    PROGRESS = 2  # status edits: dropped when the chat is saturated


class SlotRefused(Exception):
    """A progress send was refused: the chat's budget is saturated (newer news will follow)."""


@dataclass(frozen=True, slots=True)
class Limits:
    group_messages: int = 20
    group_period_s: float = 60.0
    overall_messages: int = 30
    overall_period_s: float = 1.0
    # Free group slots a call of each priority must leave for more important ones.
    group_reserve: tuple[int, int, int] = (0, 2, 5)
    max_retries: int = 8  # a 429 anyway (other clients of the same bot, stricter limits)


@dataclass(slots=True)
class _Window:
    """Send times within the last `period_s`."""

    limit: int
    period_s: float
    sent: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0

    def free(self, now: float) -> int:
        while self.sent and self.sent[0] <= now - self.period_s:
            self.sent.popleft()
        return 0 if now < self.blocked_until else self.limit - len(self.sent)

    def next_free_at(self, now: float) -> float:
        if now < self.blocked_until:
            return self.blocked_until
        return self.sent[0] + self.period_s if self.sent else now


@dataclass(slots=True)
class _Chat:
    window: _Window | None  # None: no per-chat limit (private chats)
    waiting: list[tuple[int, int]] = field(default_factory=list)  # heap of (priority, ticket)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class FloodControl:
    """Per-chat windows (groups only) with priorities, and one overall window."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._overall = _Window(self.limits.overall_messages, self.limits.overall_period_s)
        self._chats: dict[int | str, _Chat] = {}
        self._tickets = itertools.count()

    async def send(
        self, chat_id: object, priority: Priority, call: Callable[[], Awaitable[T]], *, pause_of: PauseOf
    ) -> T:
        """`call`, a counted send, once a slot is free for it (`take_slot`). A "too many requests"
        (`pause_of`) holds the chat back that long and the send is tried again, up to
        `limits.max_retries` times; a progress send is refused instead (`SlotRefused`)."""
        for attempt in range(self.limits.max_retries + 1):
            await self.take_slot(chat_id, priority)
            try:
                return await call()
            except Exception as error:
                pause = pause_of(error)
                if pause is None:
                    raise
                self.hold_back(chat_id, pause)
                if priority is Priority.PROGRESS:
                    raise SlotRefused(f"flood control on chat {chat_id}: progress edit dropped") from None
                if attempt == self.limits.max_retries:
                    raise
                logger.info("flood control on chat %s: waiting %.1f s", chat_id, pause)
        raise AssertionError("unreachable")

    async def send_uncounted(
        self, chat_id: object, call: Callable[[], Awaitable[T]], *, pause_of: PauseOf, courtesy: bool = False
    ) -> T:
        """`call`, a send the limits do not count (a delete, a chat action), at once; a `courtesy` is
        refused (`SlotRefused`) while the group's budget is needed. A "too many requests" means the
        platform counts more than we thought: the group's messages are held back as well."""
        if courtesy and self.busy(chat_id):
            raise SlotRefused("the chat's rate limit is saturated: chat action skipped")
        try:
            return await call()
        except Exception as error:
            pause = pause_of(error)
            if pause is not None:
                self.hold_back_group(chat_id, pause)
            raise

    def hold_back(self, chat_id: object, pause_s: float) -> None:
        """The platform said "too many" (after `pause_s`): hold this chat (or, for a private chat, every
        chat) back that long."""
        chat = self._chat(chat_id)
        window = chat.window if chat.window is not None else self._overall
        window.blocked_until = max(window.blocked_until, self._clock() + pause_s)

    def hold_back_group(self, chat_id: object, pause_s: float) -> None:
        """As `hold_back`, for a group only (a courtesy send that was counted after all)."""
        window = self._chat(chat_id).window
        if window is not None:
            window.blocked_until = max(window.blocked_until, self._clock() + pause_s)

    def busy(self, chat_id: object) -> bool:
        """Whether a courtesy (a chat action) should be skipped: the group's budget is needed."""
        chat = self._chat(chat_id)
        if chat.window is None:
            return False
        return (
            bool(chat.waiting)
            or chat.window.free(self._clock()) <= self.limits.group_reserve[Priority.PROGRESS]
        )

    async def take_slot(self, chat_id: object, priority: Priority) -> None:
        """Wait until this send is the chat's most important waiting one and a slot is free for it."""
        await self._take_slot(self._chat(chat_id), priority)

    def _chat(self, chat_id: object) -> _Chat:
        key: int | str
        try:
            key = int(chat_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            key = str(chat_id)  # "@channelname"
        chat = self._chats.get(key)
        if chat is None:
            is_group = isinstance(key, str) or key < 0
            window = _Window(self.limits.group_messages, self.limits.group_period_s) if is_group else None
            chat = self._chats[key] = _Chat(window)
        return chat

    async def _take_slot(self, chat: _Chat, priority: Priority) -> None:
        """Wait until this call is the chat's most important waiting call and a slot is free for it."""
        ticket = (int(priority), next(self._tickets))
        reserve = self.limits.group_reserve[priority]
        async with chat.changed:
            if priority is Priority.PROGRESS and not self._has_room(chat, reserve, self._clock()):
                raise SlotRefused("the chat's rate limit is saturated: progress edit dropped")
            if priority is Priority.PROGRESS and chat.waiting:
                raise SlotRefused("more important messages are waiting: progress edit dropped")
            heapq.heappush(chat.waiting, ticket)
            try:
                while True:
                    now = self._clock()
                    if chat.waiting[0] == ticket and self._has_room(chat, reserve, now):
                        heapq.heappop(chat.waiting)
                        if chat.window is not None:
                            chat.window.sent.append(now)
                        self._overall.sent.append(now)
                        chat.changed.notify_all()
                        return
                    timeout = None
                    if chat.waiting[0] == ticket:
                        timeout = max(0.01, self._next_room_at(chat, reserve, now) - now)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(chat.changed.wait(), timeout)
            except BaseException:
                if ticket in chat.waiting:
                    chat.waiting.remove(ticket)
                    heapq.heapify(chat.waiting)
                    chat.changed.notify_all()
                raise

    def _has_room(self, chat: _Chat, reserve: int, now: float) -> bool:
        if self._overall.free(now) <= 0:
            return False
        return chat.window is None or chat.window.free(now) > reserve

    def _next_room_at(self, chat: _Chat, reserve: int, now: float) -> float:
        at = self._overall.next_free_at(now) if self._overall.free(now) <= 0 else now
        window = chat.window
        if window is not None and window.free(now) <= reserve:
            if now < window.blocked_until:
                at = max(at, window.blocked_until)
            else:
                # The slot that frees enough room: the (reserve + 1)-th oldest still needs to expire.
                needed = len(window.sent) - (window.limit - reserve - 1)
                index = min(max(needed - 1, 0), len(window.sent) - 1)
                at = max(at, window.sent[index] + window.period_s)
        return at
