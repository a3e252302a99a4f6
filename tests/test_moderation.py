"""Moderation: whole-word, case-insensitive words; patterns; invalid patterns refused at load; refusals
logged with the rule and the user but never the prompt."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.discord import DISCORD
from bot.discord.settings import DiscordSettings
from bot.errors import PromptNotAllowed
from bot.moderation import Moderation, Operators, PromptSource, RuleList, rate_limited
from bot.settings import ModerationSettings
from bot.telegram import TELEGRAM
from bot.telegram.settings import TelegramSettings
from storage.jobs import Requester

ALICE = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="alice")


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("a Cat on a mat", True),
        ("CAT!", True),
        ("cat's toy", True),
        ("concatenate", False),
        ("cats", False),
        ("a red   fox", True),
        ("a red-fox", False),
        ("I like c++ a lot", True),
        ("abc++", False),
    ],
)
def test_words_match_whole_words_ignoring_case(text: str, matches: bool) -> None:
    rules = RuleList(words=["cat", "red fox", "c++"])
    assert (rules.first_match(text) is not None) is matches


def test_patterns_are_searched_anywhere_ignoring_case() -> None:
    rules = RuleList(patterns=[r"n[a4]ked", r"\bgore\w*"])
    assert rules.first_match("a N4KED tree") is not None
    matched = rules.first_match("gorey details")
    assert matched is not None and matched.label == "pattern:'\\\\bgore\\\\w*'"
    assert rules.first_match("a dressed tree") is None
    assert not RuleList() and RuleList().first_match("anything") is None


def test_invalid_patterns_are_refused_when_the_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[moderation]\nbanned_patterns = ["fine", "(unclosed"]\nspoiler_patterns = [".*"]\n'
        'banned_words = ["  "]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    problems = "\n".join(raised.value.problems)
    assert "moderation.banned_patterns.1: not a valid regular expression: missing )" in problems
    assert "(got '(unclosed')" in problems
    assert "moderation.spoiler_patterns.0: matches an empty text, so it would match every prompt" in problems
    assert "moderation.banned_words.0: an empty word matches nothing" in problems


def test_a_refusal_is_logged_with_the_rule_and_user_but_not_the_prompt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.moderation")
    moderation = Moderation(ModerationSettings(banned_words=("forbidden",)), Operators())
    prompt = "a secret landscape with a FORBIDDEN tower"
    with pytest.raises(PromptNotAllowed, match=r"^Your prompt has a word or phrase that is not allowed"):
        moderation.check(ALICE, prompt, PromptSource.PROMPT)
    (record,) = [r for r in caplog.records if r.name == "bot.moderation"]
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert "rule=word:'forbidden'" in line and "user=1" in line and "platform=telegram" in line
    assert "secret" not in line and "tower" not in line
    moderation.check(ALICE, "a quiet landscape", PromptSource.PROMPT)  # allowed: no exception


def test_style_suffix_refusals_say_where_the_word_is() -> None:
    moderation = Moderation(ModerationSettings(banned_patterns=("blood",)), Operators())
    with pytest.raises(PromptNotAllowed, match=r"^Your style suffix \(from /settings\) has"):
        moderation.check(ALICE, "bloody", PromptSource.STYLE_SUFFIX)
    with pytest.raises(PromptNotAllowed, match=r"^That style suffix has .*; your settings are unchanged"):
        moderation.check(ALICE, "bloody", PromptSource.NEW_STYLE_SUFFIX)


def test_spoilers_and_operators() -> None:
    moderation = Moderation(
        ModerationSettings(spoiler_words=("spider",), spoiler_patterns=("clowns?",)),
        Operators.from_sections(
            {DISCORD: DiscordSettings(admin_user_ids=(7,)), TELEGRAM: TelegramSettings(admin_user_ids=(1,))}
        ),
    )
    assert moderation.is_spoiler("a huge Spider")
    assert moderation.is_spoiler("two CLOWNS")
    assert not moderation.is_spoiler("spiderman")
    assert moderation.is_operator(ALICE)
    assert not moderation.is_operator(Requester(DISCORD, "100", "1", "alice"))
    assert moderation.is_operator(Requester(DISCORD, "100", "7", "op"))


def test_the_rate_limit_refusal_says_when_to_come_back() -> None:
    now = datetime(2026, 11, 30, 14, 0, 30, tzinfo=UTC)
    refusal = rate_limited(5, now + timedelta(minutes=11, seconds=10), now=now)
    assert str(refusal) == (
        "You have sent 5 jobs in the last hour, the most this server allows. You can send the next one "
        "in 12 minutes (at 14:11 UTC)."
    )
    assert "in a minute" in str(rate_limited(1, now + timedelta(seconds=5), now=now))
