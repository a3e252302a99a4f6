"""Telegram's flood limits, with priorities: answers first, finished images next, progress last.

Telegram allows about 20 messages a minute in a group and 30 a second overall. PTB's AIORateLimiter
throttles every call in arrival order, so in a busy group the replies to commands and the images wait
behind progress edits (and behind deletes and chat actions, which it counts as well). This limiter
counts only what posts or changes a message, serves each chat's waiting calls by priority, keeps a few
of a group's slots for the calls that matter more, and drops a progress edit at once when the group's
budget is saturated rather than queueing it (a newer edit, or the result itself, follows).

Every bot call may pass ``rate_limit_args=Priority.X``; calls without one count as replies.
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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter

logger = logging.getLogger(__name__)

JsonResult = bool | dict[str, Any] | list[dict[str, Any]]


class Priority(enum.IntEnum):
    """Lower goes first."""

    REPLY = 0  # answers to commands and buttons
    RESULT = 1  # finished images, failure notices
    PROGRESS = 2  # status edits: dropped when the chat is saturated


class ProgressDropped(TelegramError):
    """A progress edit was not sent: the chat's rate limit is saturated (newer news will follow)."""


# Methods that post or change a message: these count against the limits. Deleting messages, chat
# actions and answering callback queries do not.
COUNTED_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendMediaGroup",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "editMessageMedia",
        "copyMessage",
        "forwardMessage",
    }
)


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


class PriorityRateLimiter(BaseRateLimiter[Priority]):
    """A PTB rate limiter: per-group windows with priorities, an overall window, 429s waited out."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits or Limits()
        self._clock = clock
        self._overall = _Window(self._limits.overall_messages, self._limits.overall_period_s)
        self._chats: dict[int | str, _Chat] = {}
        self._tickets = itertools.count()

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, JsonResult]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Priority | None,
    ) -> JsonResult:
        priority = Priority.REPLY if rate_limit_args is None else Priority(rate_limit_args)
        chat_id = data.get("chat_id")
        if chat_id is None:
            return await callback(*args, **kwargs)
        chat = self._chat(chat_id)
        if endpoint not in COUNTED_METHODS:
            return await self._uncounted(chat, endpoint, callback, args, kwargs)
        for attempt in range(self._limits.max_retries + 1):
            await self._take_slot(chat, priority)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as error:
                pause = _seconds(error)
                if chat.window is not None:
                    chat.window.blocked_until = max(chat.window.blocked_until, self._clock() + pause)
                else:
                    self._overall.blocked_until = max(self._overall.blocked_until, self._clock() + pause)
                if priority is Priority.PROGRESS:
                    raise ProgressDropped(f"flood control on chat {chat_id}: progress edit dropped") from None
                if attempt == self._limits.max_retries:
                    raise
                logger.info("Telegram flood control on chat %s: waiting %.1f s", chat_id, pause)
        raise AssertionError("unreachable")

    async def _uncounted(
        self,
        chat: _Chat,
        endpoint: str,
        callback: Callable[..., Coroutine[Any, Any, JsonResult]],
        args: Any,
        kwargs: dict[str, Any],
    ) -> JsonResult:
        """Deletes, chat actions, callback answers: sent at once, except that a chat action (a
        courtesy) is skipped while the group's budget is needed for messages."""
        if endpoint == "sendChatAction" and chat.window is not None:
            reserve = self._limits.group_reserve[Priority.PROGRESS]
            if chat.waiting or chat.window.free(self._clock()) <= reserve:
                raise ProgressDropped("the chat's rate limit is saturated: chat action skipped")
        try:
            return await callback(*args, **kwargs)
        except RetryAfter as error:
            # Telegram counts more than we thought: hold this chat's messages back as well.
            if chat.window is not None:
                chat.window.blocked_until = max(chat.window.blocked_until, self._clock() + _seconds(error))
            raise

    def _chat(self, chat_id: object) -> _Chat:
        key: int | str
        try:
            key = int(chat_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            key = str(chat_id)  # "@channelname"
        chat = self._chats.get(key)
        if chat is None:
            is_group = isinstance(key, str) or key < 0
            window = _Window(self._limits.group_messages, self._limits.group_period_s) if is_group else None
            chat = self._chats[key] = _Chat(window)
        return chat

    async def _take_slot(self, chat: _Chat, priority: Priority) -> None:
        """Wait until this call is the chat's most important waiting call and a slot is free for it."""
        ticket = (int(priority), next(self._tickets))
        reserve = self._limits.group_reserve[priority]
        async with chat.changed:
            if priority is Priority.PROGRESS and not self._has_room(chat, reserve, self._clock()):
                raise ProgressDropped("the chat's rate limit is saturated: progress edit dropped")
            if priority is Priority.PROGRESS and chat.waiting:
                raise ProgressDropped("more important messages are waiting: progress edit dropped")
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


def _seconds(error: RetryAfter) -> float:
    # `retry_after` is deprecated as an int; PTB keeps the timedelta here (AIORateLimiter reads it too).
    value = getattr(error, "_retry_after", None)
    seconds = value.total_seconds() if isinstance(value, timedelta) else 1.0
    return seconds + 0.1
