"""Running the `majicbot` command as a real subprocess, the way an operator runs it."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
FAKE_MODELSCOPE = ROOT / "tests" / "support" / "fake_modelscope"


def majicbot(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    python_path: Sequence[Path] = (),
) -> subprocess.CompletedProcess[str]:
    """`majicbot ARGS` in `cwd` with no MAJICBOT_* variables but `env`; `python_path` goes first."""
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=_environment(env, python_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def majicbot_on_a_terminal(
    *args: str, cwd: Path, timeout: float = 120, python_path: Sequence[Path] = ()
) -> tuple[int, str]:
    """`majicbot ARGS` with stderr on a pseudo-terminal: (exit code, what the terminal showed)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=_environment({}, python_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            shown += chunk
        returncode = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return returncode, shown.decode("utf-8", "replace")


def _environment(env: dict[str, str] | None, python_path: Sequence[Path]) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAJICBOT_")}
    environment["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*python_path, ROOT))
    environment.update(env or {})
    return environment


def assert_friendly(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Failed with a short message containing `expected`, and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("majicbot:")]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
