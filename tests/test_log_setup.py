"""Secrets never reach the logs, however a library formats its line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.log_setup import MASK, SecretRedactor, configure_logging
from tests.support import discord_harness
from tests.support.app_harness import running

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


INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldA.very-secret_token"


@pytest.mark.parametrize(
    "line",
    [
        f"POST https://discord.com/api/v10/interactions/1234567890/{INTERACTION_TOKEN}/callback -> 200",
        f"PATCH https://discord.com/api/v10/webhooks/99/{INTERACTION_TOKEN}/messages/@original",
        f"webhook https://discord.com/api/webhooks/99/{INTERACTION_TOKEN}?wait=1",
        f"WebSocket Event: {{'t': 'INTERACTION_CREATE', 'd': {{'id': '1', 'token': '{INTERACTION_TOKEN}'}}}}",
        f'WebSocket Event: {{"t": "INTERACTION_CREATE", "d": {{"id": "1", "token": "{INTERACTION_TOKEN}"}}}}',
    ],
)
def test_interaction_tokens_and_webhook_urls_are_masked_by_shape(line: str) -> None:
    redacted = SecretRedactor([]).redact(line)
    assert INTERACTION_TOKEN not in redacted
    assert MASK in redacted


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logging")
async def test_discord_debug_logs_never_show_interaction_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("DEBUG", [discord_harness.TOKEN])
    caplog.set_level(logging.DEBUG)  # a handler of someone else's: records are scrubbed at the source
    async with (
        discord_harness.emulated() as emulator,
        running(discord_harness.make_config(tmp_path, emulator), with_engine=False),
    ):
        interaction = await emulator.inject_slash("imagine", {"prompt": "a cat"}, user_id=42)
        await emulator.wait_for_call(discord_harness.answer_to(interaction))
        interaction_2 = await emulator.inject_slash("queue", user_id=42)
        await emulator.wait_for_call(discord_harness.answer_to(interaction_2))
    err = capsys.readouterr().err
    assert "INTERACTION_CREATE" in err and "/interactions/" in err  # DEBUG lines were written
    assert "INTERACTION_CREATE" in caplog.text
    for secret in (interaction.token, interaction_2.token, discord_harness.TOKEN):
        assert secret not in err
        assert secret not in caplog.text
