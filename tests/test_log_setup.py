"""Secrets never reach the logs, however a library formats its line."""

from __future__ import annotations

import logging

import pytest

from bot.log_setup import MASK, SecretRedactor, configure_logging

TOKEN = "123456:AAHsecretTOKENvalue"


def test_token_in_message_and_arguments_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [TOKEN])
    log = logging.getLogger("telegram.ext.ExtBot")
    log.warning("POST https://api.telegram.org/bot%s/getMe failed", TOKEN)
    log.warning("calling %s", f"https://api.telegram.org/bot{TOKEN}/sendPhoto")
    try:
        raise RuntimeError(f"bad url /bot{TOKEN}/x")
    except RuntimeError:
        log.exception("request failed")
    err = capsys.readouterr().err
    assert TOKEN not in err
    assert err.count(MASK) == 3  # message, argument, exception text


def test_short_or_empty_secrets_are_ignored() -> None:
    redactor = SecretRedactor(["", "abc"])
    assert redactor.redact("abc def") == "abc def"


def test_configure_logging_is_idempotent() -> None:
    configure_logging("INFO", [TOKEN])
    configure_logging("WARNING", [TOKEN])
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_majicbot", False)]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.WARNING
