"""The immediate answer to /imagine and /reroll on Telegram: the job's number, position and ETA.

In a private chat the answer goes out at once and becomes the job's status message; in a group,
answers that arrive within `batch_s` of each other share one message (`bot.reply_batch`).

A job that is queued stays queued whatever happens to its answer: a failed send is tried again a
couple of times and then only logged (never "try again", which would queue a second job), and the
picture is posted when it is done either way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from telegram import Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import Forbidden, NetworkError, TelegramError, TimedOut
from telegram.ext import ExtBot

from bot import texts
from bot.reply_batch import ReplyBatcher
from bot.standing import Queued
from bot.telegram.presenter import TelegramPresenter
from bot.telegram.rate_limiter import Priority

logger = logging.getLogger(__name__)

SEND_ATTEMPTS = 3
RETRY_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class _Ask:
    reply_to: Message
    queued: Queued


class Acknowledger:
    """Sends the answers to queued jobs; one per chat and job, batched in groups (`bot.reply_batch`)."""

    def __init__(self, bot: ExtBot[Any], presenter: TelegramPresenter, *, batch_s: float = 0.5) -> None:
        self._bot = bot
        self._presenter = presenter
        self._batcher = ReplyBatcher(self._send, batch_s=batch_s)

    async def acknowledge(self, reply_to: Message, queued: Queued) -> None:
        """Answer `reply_to` with where `queued` stands; returns once the answer was sent (or given up)."""
        batch = reply_to.chat.type != "private"
        await self._batcher.add(reply_to.chat_id, _Ask(reply_to, queued), batch=batch)

    async def close(self) -> None:
        """Send what is waiting now (on shutdown)."""
        await self._batcher.close()

    async def _send(self, asks: list[_Ask]) -> None:
        first = asks[0].reply_to
        if len(asks) == 1:
            text = texts.queued_text(asks[0].queued)
        else:
            text = texts.queued_batch_text([ask.queued for ask in asks])
        status = await self._send_text(first, text, [ask.queued.job.id for ask in asks])
        if status is not None and len(asks) == 1:
            # This message shows the job's progress from now on.
            job = asks[0].queued.job
            try:
                await self._presenter.attach_status(job, status.message_id, text)
            except Exception:
                logger.warning("job=%d: could not remember its status message", job.id, exc_info=True)
        try:
            await self._bot.send_chat_action(first.chat_id, ChatAction.UPLOAD_PHOTO)
        except TelegramError as error:
            logger.debug("chat action failed in chat %s: %s", first.chat_id, error)

    async def _send_text(self, reply_to: Message, text: str, job_ids: list[int]) -> Message | None:
        jobs = " ".join(f"job={job_id}" for job_id in job_ids)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return await self._bot.send_message(
                    reply_to.chat_id,
                    text,
                    reply_parameters=ReplyParameters(
                        message_id=reply_to.message_id, allow_sending_without_reply=True
                    ),
                    rate_limit_args=Priority.REPLY,
                )
            except (Forbidden, TimedOut) as error:
                # Blocked, or perhaps sent after all (a timeout): sending again could only annoy.
                logger.warning("%s queued, but the answer was not sent: %s", jobs, error)
                return None
            except NetworkError as error:
                if attempt == SEND_ATTEMPTS:
                    logger.warning(
                        "%s queued, but the answer could not be sent (%s); the picture is posted when done",
                        jobs,
                        error,
                    )
                    return None
                await asyncio.sleep(RETRY_PAUSE_S * attempt)
            except TelegramError as error:
                logger.warning("%s queued, but the answer was refused: %s", jobs, error)
                return None
        return None
