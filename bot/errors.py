"""Errors the chat side shows to users. Their text is the whole reply: short, friendly, actionable."""

from __future__ import annotations


class UserFacingError(Exception):
    """Something the user can fix or should know; `str(error)` is the reply, already worded."""


class InvalidRequest(UserFacingError):
    """The command was written wrong (unknown flag, seed out of range, prompt too long, ...)."""


class QuotaExceeded(UserFacingError):
    """The user already has as many active jobs as allowed."""


class NotAllowed(UserFacingError):
    """The user or chat is not on the allowlist, or may not touch this job."""


class NothingToDo(UserFacingError):
    """E.g. /reroll with no earlier job, /cancel with nothing active."""


class Unavailable(UserFacingError):
    """The bot cannot take the request now (its disk is full, its database busy); nothing was queued."""


class RateLimited(QuotaExceeded):
    """The user submitted as many jobs in the last hour as allowed; the text says when to try again."""


class Banned(NotAllowed):
    """An operator banned the user: every command is refused."""


class PromptNotAllowed(InvalidRequest):
    """The prompt (or the style suffix) has a word or pattern the operator does not allow."""
