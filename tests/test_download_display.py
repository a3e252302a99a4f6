"""bot.download_display: a tqdm bar per file on a terminal, periodic log lines with rate and ETA otherwise."""

from __future__ import annotations

import io
import logging

import pytest

from bot.download_display import LoggedTransfer, transfer_display


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_bytes_rate_and_eta() -> None:
    stream = _Terminal()
    transfer = transfer_display(stream)("ae.safetensors", 4 * 2**20)
    for _ in range(4):
        transfer.advance(2**20)
    transfer.finish()
    drawn = stream.getvalue()
    assert "ae.safetensors" in drawn
    assert "4.00M/4.00M" in drawn  # bytes, scaled by 1024
    assert "B/s" in drawn and "<" in drawn  # the rate and the time left


def test_a_pipe_gets_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.download_display")
    transfer = transfer_display(io.StringIO(), interval_s=0)("ae.safetensors", 1000)
    assert isinstance(transfer, LoggedTransfer)
    transfer.advance(500)
    transfer.finish()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "downloading ae.safetensors (1000 B)"
    assert lines[1].startswith("ae.safetensors: 500 B of 1000 B (50%)")
    assert lines[-1].startswith("downloaded ae.safetensors: 500 B")


def test_log_lines_come_at_the_interval_with_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.download_display")
    now = [100.0]
    transfer = LoggedTransfer("dit", 10 * 2**30, interval_s=30, clock=lambda: now[0])
    for _ in range(10):  # 10 s at 100 MiB/s: no line yet
        now[0] += 1
        transfer.advance(100 * 2**20)
    assert len(caplog.records) == 1
    for _ in range(25):
        now[0] += 1
        transfer.advance(100 * 2**20)
    progress = [r.getMessage() for r in caplog.records[1:]]
    assert progress == ["dit: 2.9 GiB of 10.0 GiB (29%), 100.0 MiB/s, about 72 s left"]
