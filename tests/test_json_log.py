"""bot.json_log: one JSON object per line for log collectors, with the job id and secrets scrubbed."""

from __future__ import annotations

import json
import logging

import pytest

from bot.log_setup import MASK, configure_logging


def test_lines_are_json_with_the_job_id_and_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", ["123456:very-secret-token"], json_lines=True)
    try:
        logger = logging.getLogger("majicbot.test")
        logger.info("delivered status=%s job=%d", "done", 42)
        logger.warning("POST https://api.telegram.org/bot123456:very-secret-token/sendPhoto failed")
        try:
            raise ValueError("bad 123456:very-secret-token")
        except ValueError:
            logger.exception("it broke job=7")
        err = capsys.readouterr().err
    finally:
        configure_logging("INFO")
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
    assert lines[0]["message"] == "delivered status=done job=42" and lines[0]["job"] == 42
    assert lines[0]["logger"] == "majicbot.test" and lines[0]["time"].endswith("+00:00")
    assert "job" not in lines[1] and MASK in lines[1]["message"]
    assert lines[2]["job"] == 7 and "ValueError" in lines[2]["exc_info"]
    assert "very-secret-token" not in err
