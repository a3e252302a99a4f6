"""Where each job's status line is: remembered by this chat process, and stored in the job row.

A status line is stored in its job's row (`BotService.set_status_message`) once its message id is known:
the id and, where editing needs one, the credential (Discord's interaction token), sealed by
`bot.sealed_token`, with the time it was issued. So another chat process, or this one after a restart,
restores the line from the row and keeps editing it, for as long as the credential lives
(`token_lifetime_s`; Discord's die after 15 minutes), after which the line simply stops changing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.sealed_token import seal, unseal
from bot.service import BotService
from storage.jobs import Job

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StatusLine:
    """A job's status line as this process knows it."""

    message_id: str | None  # None until the platform names it (a deferred answer: after its first edit)
    token: str | None = None  # the credential edits need besides the bot's own (Discord's interaction token)
    # The platform's handle of an answer opened by a command here (Discord: the interaction), for the
    # edits before its message id is known.
    opener: object = None
    opened: float = field(default_factory=time.monotonic)  # when the token was issued
    stored: bool = False  # message id (and token) are in the job row


class StatusLines:
    """The status lines of one platform's jobs in this chat process."""

    def __init__(
        self, service: BotService, *, token_key: str | None = None, token_lifetime_s: float | None = None
    ) -> None:
        """`token_key` seals tokens in job rows; `token_lifetime_s`: how long a token can edit its line
        (None: lines need no token and never expire)."""
        self._service = service
        self._token_key = token_key
        self._token_lifetime_s = token_lifetime_s
        self._lines: dict[int, StatusLine] = {}

    def get(self, job: Job) -> StatusLine | None:
        """The job's line: attached here, or restored from its row (another chat process attached it,
        or this one before a restart) while its token lives."""
        line = self._lines.get(job.id)
        if line is None:
            line = self._restore(job)
            if line is not None:
                self._lines[job.id] = line
        return line

    def attach(self, job_id: int, line: StatusLine) -> None:
        self._lines[job_id] = line

    def forget(self, job_id: int) -> None:
        self._lines.pop(job_id, None)

    def clear(self) -> None:
        self._lines.clear()

    def expired(self, line: StatusLine) -> bool:
        """Whether the line's token is dead (Discord refuses edits with it)."""
        lifetime = self._token_lifetime_s
        return lifetime is not None and time.monotonic() - line.opened > lifetime

    async def store(self, job: Job, line: StatusLine) -> None:
        """Put the line in the job row, once (and once its message id is known); a failure is logged."""
        if line.stored or line.message_id is None:
            return
        line.stored = True
        token = issued = None
        if line.token is not None and self._token_key is not None:
            token = seal(line.token, self._token_key)
            issued = datetime.now(UTC) - timedelta(seconds=time.monotonic() - line.opened)
        try:
            await self._service.set_status_message(
                job.id, line.message_id, token=token, token_issued_at=issued
            )
        except Exception:
            logger.exception("job=%s: could not store its status line for other chat processes", job.id)

    def _restore(self, job: Job) -> StatusLine | None:
        message_id = job.status_message_id
        if not (message_id or "").isdigit():
            return None
        if self._token_lifetime_s is None:
            return StatusLine(message_id, stored=True)
        if job.status_token is None or job.status_token_at is None or self._token_key is None:
            return None
        age_s = (datetime.now(UTC) - job.status_token_at).total_seconds()
        token = unseal(job.status_token, self._token_key)
        if age_s >= self._token_lifetime_s or token is None:
            return None
        return StatusLine(message_id, token, opened=time.monotonic() - age_s, stored=True)
