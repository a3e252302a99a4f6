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
