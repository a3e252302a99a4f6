"""The door every command and button press passes, on every platform: who gets in, and how a call's
outcome, whatever it is, comes back as an answer to render.

An adapter builds a `Place` and a `Requester` from its event and asks `ChatEntrance.admit` once; it
gets a `Caller`, or the `Refused` answer to show (not allowed here, banned, or the check itself failed).
It then runs the command through `serve`, which renders the answer, or, when the call or the rendering
fails, the refusal: a mistake's own words, or a generic apology with the traceback in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot import texts
from bot.access import AccessPolicy, Caller, Place
from bot.chat_commands import Answer, ChatCommands, Refused
from bot.errors import UserFacingError
from bot.standing import Queued
from storage.jobs import Requester

logger = logging.getLogger(__name__)


class ChatEntrance:
    """The access rule and the ban list, checked once per event at an adapter's entrance.

    `explain_refusals`: say why someone outside the allowlists is refused (Discord: which server,
    channel or role would do); otherwise one polite line (Telegram: the allowlists are the operator's
    business). A banned user always hears the operator's reason."""

    def __init__(self, commands: ChatCommands, policy: AccessPolicy, *, explain_refusals: bool) -> None:
        self._commands = commands
        self._policy = policy
        self._explain_refusals = explain_refusals

    async def admit(self, place: Place, requester: Requester) -> Caller | Refused:
        """The caller, when the access rule and the ban list let them in; else what to tell them."""
        where = f"{requester.platform} user {place.user_id} in chat {place.chat_id}"
        try:
            self._policy.check(place)
        except UserFacingError as error:
            logger.info("refused %s", where)
            return Refused(str(error) if self._explain_refusals else texts.not_allowed_text())
        caller = Caller(requester, self._policy.is_admin(place.user_id))
        try:
            await self._commands.admit(caller)
        except UserFacingError as error:
            logger.info("refused %s: banned", where)
            return Refused(str(error))
        except Exception as error:
            logger.exception("the entrance check of %s failed", where)
            return Refused(texts.unexpected_error_text(error))
        return caller


async def serve(
    call: Callable[[], Awaitable[Answer]], render: Callable[[Answer], Awaitable[None]], what: str
) -> None:
    """Render `call`'s answer; a mistake (`UserFacingError`) is answered in its own words and anything
    else with a generic apology, logged with its traceback as "`what` failed". A refusal that cannot
    be rendered either is left to the platform's last-resort handler.

    A job that was queued stays queued whatever happens to its answer: a failure to render a `Queued`
    is only logged, never answered with "try again" (that would queue a second job); the picture is
    posted when done either way."""
    answer: Answer | None = None
    try:
        answer = await call()
        await render(answer)
        return
    except Exception as error:
        if isinstance(answer, Queued):
            logger.exception("job=%s is queued, but its answer could not be shown", answer.job.id)
            return
        if isinstance(error, UserFacingError):
            refusal = Refused(str(error))
        else:
            logger.exception("%s failed", what)
            refusal = Refused(texts.unexpected_error_text(error))
    await render(refusal)
