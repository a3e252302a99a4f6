"""Telegram's flood limits for PTB: `bot.flood_control` behind PTB's `BaseRateLimiter`.

Only what posts or changes a message counts; deletes, chat actions and callback answers go at once
(a chat action is skipped while a group's budget is needed). A 429 (`RetryAfter`) holds the chat back
and is retried; a progress edit is dropped instead (`ProgressDropped`). Every bot call may pass
``rate_limit_args=Priority.X``; calls without one count as replies.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter

from bot.flood_control import FloodControl, Limits, Priority, SlotRefused

__all__ = ["COUNTED_METHODS", "Limits", "Priority", "PriorityRateLimiter", "ProgressDropped"]

JsonResult = bool | dict[str, Any] | list[dict[str, Any]]


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


class PriorityRateLimiter(BaseRateLimiter[Priority]):
    """A PTB rate limiter: per-group windows with priorities, an overall window, 429s waited out."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._flood = FloodControl(limits, clock)

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
        call = functools.partial(callback, *args, **kwargs)
        if chat_id is None:
            return await call()
        try:
            if endpoint in COUNTED_METHODS:
                return await self._flood.send(chat_id, priority, call, pause_of=_pause)
            courtesy = endpoint == "sendChatAction"
            return await self._flood.send_uncounted(chat_id, call, pause_of=_pause, courtesy=courtesy)
        except SlotRefused as refused:
            raise ProgressDropped(str(refused)) from None


def _pause(error: Exception) -> float | None:
    """How long a 429 asks to wait (a little more, to be safe); None for any other error."""
    if not isinstance(error, RetryAfter):
        return None
    # `retry_after` is deprecated as an int; PTB keeps the timedelta here (AIORateLimiter reads it too).
    value = getattr(error, "_retry_after", None)
    seconds = value.total_seconds() if isinstance(value, timedelta) else 1.0
    return seconds + 0.1
