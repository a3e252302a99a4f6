"""Logging for the whole program: one format, job ids in lines, and secrets scrubbed from every record.

Libraries log request URLs, and Telegram's Bot API puts the token in the URL path; a filter on the
handler replaces every configured secret before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bot.json_log import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MASK = "********"
# Chatty at INFO/DEBUG and never useful to an operator at those levels.
_QUIET_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram.ext.Updater",
    "discord.gateway",
    "discord.http",
    "aiosqlite",
    "alembic",
)


class SecretRedactor(logging.Filter):
    """Replaces each secret in a record's message and arguments with a mask."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str, secrets: Iterable[str] = (), *, json_lines: bool = False) -> None:
    """Send logs to stderr at `level` (one JSON object per line if `json_lines`), with `secrets`
    scrubbed; idempotent."""
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
    if level != "DEBUG":
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
