"""Logging for the whole program: one format, job ids in lines, and secrets scrubbed from every record.

Libraries log request URLs, and Telegram's Bot API puts the token in the URL path; a filter on the
handler replaces every configured secret before anything is written. Some credentials are not known in
advance: Discord's interaction tokens (valid for 15 minutes) travel in interaction and webhook URLs and
in gateway payloads that discord.py logs at DEBUG, so those are recognised by their shape and masked too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from bot.json_log import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MASK = "********"
# Chatty at INFO/DEBUG and never useful to an operator at those levels (and each platform's own,
# `PlatformSpec.noisy_loggers`).
_QUIET_LOGGERS = {"httpx", "httpcore", "aiosqlite", "alembic"}


# Credentials recognised by where they stand; group 1 is kept, the rest of the match is masked.
_SHAPED_SECRETS = (
    # https://discord.com/api/v10/interactions/<id>/<token>/callback
    re.compile(r"(/interactions/[0-9]+/)[^/?#\s'\"]+"),
    # webhook URLs and interaction follow-ups: /webhooks/<id>/<token>
    re.compile(r"(/webhooks/[0-9]+/)[^/?#\s'\"]+"),
    # "token": "..." in JSON or a repr'd dict (gateway events, request payloads)
    re.compile(r"""(["']token["']\s*:\s*["'])[^"']+"""),
)


class SecretRedactor(logging.Filter):
    """Replaces each secret in a record's message and arguments with a mask, and masks credentials
    recognised by their shape (interaction tokens, webhook URLs)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _SHAPED_SECRETS:
            text = pattern.sub(rf"\g<1>{MASK}", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def guard_loggers(redactor: SecretRedactor, prefixes: Iterable[str]) -> list[logging.Logger]:
    """Put `redactor` on every logger named by or under `prefixes`, so records are scrubbed where they
    are made, whatever handler writes them (a parent's filter does not see a child's records, so each
    existing logger under those names gets it). Returns them, for `removeFilter` on shutdown."""
    prefixes = tuple(prefixes)
    names = {
        name
        for name in logging.root.manager.loggerDict
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
    }
    names.update(prefixes)
    guarded = [logging.getLogger(name) for name in sorted(names)]
    for guarded_logger in guarded:
        guarded_logger.addFilter(redactor)
    return guarded


def configure_logging(
    level: str, secrets: Iterable[str] = (), *, json_lines: bool = False, noisy_loggers: Iterable[str] = ()
) -> None:
    """Send logs to stderr at `level` (one JSON object per line if `json_lines`), with `secrets`
    scrubbed and `noisy_loggers` quietened; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_majicbot", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._majicbot = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(LOG_FORMAT))
    handler.addFilter(SecretRedactor(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    # At DEBUG everything shows (also after an earlier call quietened these).
    quiet_level = logging.NOTSET if level == "DEBUG" else logging.WARNING
    # Remembered, so that a later call at DEBUG shows the platforms' loggers an earlier one quietened.
    _QUIET_LOGGERS.update(noisy_loggers)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet_level)
