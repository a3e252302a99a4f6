"""What the claim loop reports for an operator's metrics, through an object the application injects.

The engine knows nothing of Prometheus: `bot.metrics` implements this protocol and `bot.app` hands it
to the claim loop; without metrics the loop gets `NO_ENGINE_METRICS`, which does nothing.
"""

from __future__ import annotations

from typing import Protocol

from engine.messages import JobSucceeded


class EngineMetrics(Protocol):
    def job_started(self, wait_s: float) -> None:
        """A job was claimed after waiting `wait_s` seconds in the queue."""

    def job_ran(self, result: JobSucceeded) -> None:
        """The worker made an image (run time, seconds per step, GPU memory after the job)."""

    def job_outcome(self, outcome: str) -> None:
        """A job left the engine: "done", "failed", "cancelled", or "queued" (given back or re-queued)."""


class _NoEngineMetrics:
    def job_started(self, wait_s: float) -> None:
        pass

    def job_ran(self, result: JobSucceeded) -> None:
        pass

    def job_outcome(self, outcome: str) -> None:
        pass


NO_ENGINE_METRICS: EngineMetrics = _NoEngineMetrics()
