"""The immediate answer to a queued job: its number, position and ETA; it then shows the job's progress.

Platforms whose commands are answered with a message of the bot's own (Telegram; not Discord, whose
deferred interaction is the answer) send it through `Acknowledger`. In a busy chat, answers that arrive
within `batch_s` of each other share one message (`bot.reply_batch`); a lone answer becomes the job's
status line (`StatusPresenter.attach_status`); then the platform's "busy" signal shows the picture is on
its way.

A job that is queued stays queued whatever happens to its answer: a send that failed in a way worth
retrying (the adapter says which) is tried again a couple of times and then only logged (never "try
again", which would queue a second job), and the picture is posted when it is done either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bot import texts
from bot.reply_batch import ReplyBatcher
from bot.standing import Queued
from bot.status_presenter import StatusPresenter

logger = logging.getLogger(__name__)

SEND_ATTEMPTS = 3
RETRY_PAUSE_S = 1.0

Command = TypeVar("Command")  # the platform's message that the answer replies to

Send = Callable[[Command, str], Awaitable[int | str]]
"""Sends `text` in reply to the command; the sent message's id."""


@dataclass(frozen=True, slots=True)
class _Ask(Generic[Command]):
    reply_to: Command
    queued: Queued


class Acknowledger(Generic[Command]):
    """Sends the answers to queued jobs; one per chat and job, batched in busy chats."""

    def __init__(
        self,
        presenter: StatusPresenter,
        send: Send[Command],
        *,
        retryable: Callable[[Exception], bool],
        batch_s: float = 0.5,
    ) -> None:
        self._presenter = presenter
        self._send_answer = send
        self._retryable = retryable
        self._batcher: ReplyBatcher[_Ask[Command]] = ReplyBatcher(self._send, batch_s=batch_s)

    async def acknowledge(self, reply_to: Command, queued: Queued, *, chat: Hashable, batch: bool) -> None:
        """Answer `reply_to` with where `queued` stands (with other answers in `chat` if `batch`);
        returns once the answer was sent (or given up)."""
        await self._batcher.add(chat, _Ask(reply_to, queued), batch=batch)

    async def close(self) -> None:
        """Send what is waiting now (on shutdown)."""
        await self._batcher.close()

    async def _send(self, asks: list[_Ask[Command]]) -> None:
        if len(asks) == 1:
            text = texts.queued_text(asks[0].queued)
        else:
            text = texts.queued_batch_text([ask.queued for ask in asks])
        message_id = await self._send_text(asks[0].reply_to, text, [ask.queued.job.id for ask in asks])
        if message_id is not None and len(asks) == 1:
            # This message shows the job's progress from now on.
            job = asks[0].queued.job
            try:
                await self._presenter.attach_status(job, message_id, text)
            except Exception:
                logger.warning("job=%d: could not remember its status message", job.id, exc_info=True)
        await self._presenter.signal_activity(asks[0].queued.job)

    async def _send_text(self, reply_to: Command, text: str, job_ids: list[int]) -> int | str | None:
        jobs = " ".join(f"job={job_id}" for job_id in job_ids)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return await self._send_answer(reply_to, text)
            except Exception as error:
                if attempt == SEND_ATTEMPTS or not self._retryable(error):
                    # Blocked, refused, or perhaps sent after all (a timeout): sending again could only annoy.
                    logger.warning(
                        "%s queued, but the answer was not sent (%s: %s); the picture is posted when done",
                        jobs,
                        type(error).__name__,
                        error,
                    )
                    return None
                await asyncio.sleep(RETRY_PAUSE_S * attempt)
        return None
