"""The model's loading progress on a terminal: one bar per stage (bytes read, then the warm-up)."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm

from engine.messages import LoadProgress
from engine.supervisor import LoadProgressCallback


class LoadBar:
    """`report` draws a bar on a terminal; elsewhere it hands over to the engine's log lines."""

    def __init__(self) -> None:
        self._bar: tqdm[None] | None = None
        self._stage = ""
        self._fallback: LoadProgressCallback | None = None
        if not sys.stderr.isatty():
            from engine.supervisor import default_load_report

            self._fallback = default_load_report()

    def report(self, progress: LoadProgress) -> None:
        if self._fallback is not None:
            self._fallback(progress)
            return
        if progress.stage != self._stage:
            self.close()
            self._stage = progress.stage
            large = progress.total > 1_000_000
            self._bar = tqdm(
                total=progress.total,
                desc=progress.stage,
                unit="B" if large else "",
                unit_scale=large,
                file=sys.stderr,
                leave=False,
            )
        assert self._bar is not None
        self._bar.update(progress.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> LoadBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
