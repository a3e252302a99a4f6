"""Running the `majicbot` command as a real subprocess, the way an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
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
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAJICBOT_")}
    environment["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*python_path, ROOT))
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_friendly(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Failed with a short message containing `expected`, and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("majicbot:")]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
