"""How `majicbot download` shows progress: a bar per file on a terminal, periodic log lines otherwise.

Both receive ModelScope's byte counts (from its download threads) through `models.download`'s
`TransferFactory`; a log collector or `nohup` gets a line per file every `interval_s` seconds with the
bytes, the rate and the time left instead of a stream of carriage returns.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import IO

from tqdm import tqdm

from models.download import TransferFactory

logger = logging.getLogger(__name__)


def transfer_display(stream: IO[str], *, interval_s: float = 30.0) -> TransferFactory:
    """Bars when `stream` is a terminal, log lines otherwise."""
    if stream.isatty():
        return lambda name, size: _Bar(name, size, stream)
    return lambda name, size: LoggedTransfer(name, size, interval_s=interval_s)


class _Bar:
    def __init__(self, name: str, size: int, stream: IO[str]) -> None:
        self._bar = tqdm(
            total=size or None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            file=stream,
            ncols=_width(stream),
            miniters=1,
        )
        self._lock = threading.Lock()

    def advance(self, n_bytes: int) -> None:
        with self._lock:  # ModelScope fetches parts of a large file from several threads
            self._bar.update(n_bytes)

    def finish(self) -> None:
        with self._lock:
            self._bar.close()


def _width(stream: IO[str]) -> int:
    # A terminal that reports no size (0 columns) would get an empty bar.
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, io.UnsupportedOperation):
        columns = 0
    return columns or shutil.get_terminal_size().columns or 100


class LoggedTransfer:
    """A log line when a file starts, every `interval_s` while it runs, and when it ends."""

    def __init__(
        self, name: str, size: int, *, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._name = name
        self._size = size
        self._interval_s = interval_s
        self._clock = clock
        self._started = self._clock()
        self._last_line = self._started
        self._done = 0
        self._lock = threading.Lock()
        logger.info("downloading %s (%s)", name, _bytes(size) if size else "size unknown")

    def advance(self, n_bytes: int) -> None:
        with self._lock:
            self._done += n_bytes
            now = self._clock()
            if now - self._last_line < self._interval_s:
                return
            self._last_line = now
            line = self.status(now)
        logger.info("%s", line)

    def finish(self) -> None:
        elapsed = max(self._clock() - self._started, 1e-9)
        logger.info(
            "downloaded %s: %s in %.0f s (%s/s)",
            self._name,
            _bytes(self._done),
            elapsed,
            _bytes(self._done / elapsed),
        )

    def status(self, now: float) -> str:
        """`name: 1.2 GiB of 11.1 GiB (11%), 48.0 MiB/s, about 3 min left`."""
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        if not self._size:
            return f"{self._name}: {_bytes(self._done)}, {_bytes(rate)}/s"
        percent = 100 * self._done / self._size
        left = (self._size - self._done) / rate if rate > 0 else None
        eta = "time left unknown" if left is None else f"about {_duration(left)} left"
        done = f"{_bytes(self._done)} of {_bytes(self._size)} ({percent:.0f}%)"
        return f"{self._name}: {done}, {_bytes(rate)}/s, {eta}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
