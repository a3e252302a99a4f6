"""Real `majicbot` processes for multi-process tests and benchmarks: a config file, start, wait for a
line in the log, kill -9, stop.

Each process runs `python -m bot.cli ...` with its stderr in a log file (read back on failure), the
tiny CPU backend, and settings short enough for tests (lease, polling).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_BACKEND = "tests.support.tiny_backend:create_backend"


def write_config(
    path: Path,
    *,
    database_url: str,
    data_dir: Path,
    poll_interval_s: float = 1.0,
    lease_s: float = 3.0,
    delivery_lease_s: float = 3.0,
    device: str = "cpu",
    extra: str = "",
) -> Path:
    """A config file for the tiny backend; `extra` appends sections (e.g. [telegram])."""
    path.write_text(
        f"""
[storage]
database_url = "{database_url}"
data_dir = "{data_dir}"
poll_interval_s = {poll_interval_s}
lease_s = {lease_s}
delivery_lease_s = {delivery_lease_s}

[engine]
backend = "{TINY_BACKEND}"
device = "{device}"
model_dir = "{data_dir / "models"}"
default_steps = 2
load_timeout_s = 60
job_timeout_s = 60

[limits]
min_side = 64
max_side = 256
max_pixels = 65536
min_steps = 1
max_steps = 30
max_active_jobs_per_user = 50
{extra}
""",
        encoding="utf-8",
    )
    return path


@dataclass
class MajicbotProcess:
    """One running `majicbot ARGS...`; its stderr goes to `log`."""

    name: str
    log: Path
    process: asyncio.subprocess.Process
    args: tuple[str, ...] = field(default=())

    @classmethod
    async def start(
        cls, name: str, *args: str, config: Path, log_dir: Path, env: dict[str, str] | None = None
    ) -> MajicbotProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MAJICBOT_")}
        environment["PYTHONPATH"] = str(ROOT)
        environment.update(env or {})
        log = log_dir / f"{name}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                *args,
                "--config",
                str(config),
                "--log-level",
                "INFO",
                cwd=log_dir,
                env=environment,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        return cls(name=name, log=log, process=process, args=args)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def wait_for_line(self, needle: str, *, within_s: float = 60, count: int = 1) -> None:
        """Until `needle` appears `count` times in the log; fails with the log if the process ends."""
        async with asyncio.timeout(within_s):
            while self.text().count(needle) < count:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.text()}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye (its worker child dies with the pipe)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self, within_s: float = 30) -> int:
        """SIGTERM (a clean stop), then SIGKILL if it takes longer than `within_s`."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(within_s):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0
