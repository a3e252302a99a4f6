"""Moderation for operators of public servers: banned and spoiler words in prompts, who the operators
are, and the refusals a user sees (banned, too many jobs this hour).

Words match whole words or phrases, ignoring case ("cat" matches "Cat!" but not "concatenate"; the
phrase "red fox" matches "red   fox"); patterns are regular expressions searched anywhere, ignoring case
(`ModerationSettings` rejects invalid ones when the config loads). A refusal is logged at INFO with the
rule that matched and the user, never with the prompt: the log must not become a store of what users
typed.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.errors import Banned, PromptNotAllowed, RateLimited
from bot.settings import ModerationSettings, PlatformSettings
from storage.bans import Ban
from storage.jobs import Job, Platform, Requester

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    """One configured word or pattern."""

    kind: str  # "word" or "pattern"
    text: str  # as the operator wrote it (safe to log: it is the operator's, not the user's)
    regex: re.Pattern[str] = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.text!r}"


class RuleList:
    """Words and patterns; `first_match` tells which one a text contains."""

    def __init__(self, words: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.rules = tuple(
            [Rule("word", word, _word_regex(word)) for word in words]
            + [Rule("pattern", pattern, re.compile(pattern, re.IGNORECASE)) for pattern in patterns]
        )

    def first_match(self, text: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.regex.search(text)), None)

    def __bool__(self) -> bool:
        return bool(self.rules)


def _word_regex(word: str) -> re.Pattern[str]:
    # Lookarounds instead of \b, so words that start or end with a symbol ("c++", "#tag") still
    # match only whole; any run of spaces separates the words of a phrase.
    body = r"\s+".join(re.escape(part) for part in word.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Operators:
    """The users allowed to ban and unban: each platform's `admin_user_ids`."""

    user_ids: Mapping[Platform, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_sections(cls, sections: Mapping[Platform, PlatformSettings]) -> Operators:
        """From each platform's config section (`Config.sections`)."""
        return cls({platform: section.operator_ids() for platform, section in sections.items()})

    def includes(self, platform: Platform, user_id: str) -> bool:
        return user_id in self.user_ids.get(platform, frozenset())


class PromptSource(enum.Enum):
    """Whose words a checked text is, for the refusal's wording."""

    PROMPT = "prompt"  # what the user typed in this command
    STYLE_SUFFIX = "style suffix"  # from their /settings, added to every prompt
    NEW_STYLE_SUFFIX = "new style suffix"  # being saved in /settings now
    RERUN = "rerun"  # a stored job's prompt, run again


class Moderation:
    """The operator's word lists and operators, applied to prompts."""

    def __init__(self, settings: ModerationSettings, operators: Operators) -> None:
        self._banned = RuleList(settings.banned_words, settings.banned_patterns)
        self._spoilers = RuleList(settings.spoiler_words, settings.spoiler_patterns)
        self.operators = operators

    def check(self, requester: Requester, text: str, source: PromptSource, job: Job | None = None) -> None:
        """Raise PromptNotAllowed (and log which rule matched) if `text` has a banned word or pattern."""
        rule = self._banned.first_match(text)
        if rule is None:
            return
        logger.info(
            "prompt refused: %s matched rule=%s platform=%s user=%s job=%s",
            source.value,
            rule.label,
            requester.platform,
            requester.user_id,
            job.id if job is not None else "-",
        )
        raise PromptNotAllowed(_refusal(source, job))

    def is_spoiler(self, prompt: str) -> bool:
        """Whether a picture of `prompt` is posted behind a spoiler."""
        return self._spoilers.first_match(prompt) is not None

    def is_operator(self, requester: Requester) -> bool:
        return self.operators.includes(requester.platform, requester.user_id)


def _refusal(source: PromptSource, job: Job | None) -> str:
    not_allowed = "a word or phrase that is not allowed on this server"
    if source is PromptSource.PROMPT:
        return f"Your prompt has {not_allowed}, so nothing was queued. Please rephrase it and try again."
    if source is PromptSource.STYLE_SUFFIX:
        return (
            f"Your style suffix (from /settings) has {not_allowed}, so nothing was queued. Change it "
            "with /settings style <text>, or clear it with /settings style off."
        )
    if source is PromptSource.NEW_STYLE_SUFFIX:
        return f"That style suffix has {not_allowed}; your settings are unchanged. Please rephrase it."
    number = f"job #{job.id}" if job is not None else "that job"
    return f"The prompt of {number} has {not_allowed} (any more), so it cannot be run again."


def banned(ban: Ban) -> Banned:
    """The refusal a banned user gets, whatever the command."""
    reason = f" (reason: {ban.reason})" if ban.reason else ""
    return Banned(
        f"You are banned from using this bot{reason}. If you think this is a mistake, ask the operators "
        "of this server."
    )


def rate_limited(limit: int, retry_at: datetime, *, now: datetime | None = None) -> RateLimited:
    """The refusal for the `limits.jobs_per_hour`-th job in an hour: says when the next one is accepted."""
    now = now or datetime.now(UTC)
    minutes = max(1, math.ceil((retry_at - now).total_seconds() / 60))
    wait = "a minute" if minutes == 1 else f"{minutes} minutes"
    return RateLimited(
        f"You have sent {limit} job{'s' if limit != 1 else ''} in the last hour, the most this server "
        f"allows. You can send the next one in {wait} (at {retry_at.astimezone(UTC):%H:%M} UTC)."
    )
