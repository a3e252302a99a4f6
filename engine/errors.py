"""The errors the engine raises to its callers (the claim loop, `majicbot generate`, `majicbot run`).

    EngineError
    ├── EngineStartError   the worker could not load: bad `engine.backend`, missing model files,
    │                      died or timed out while loading; the message says what to do
    ├── EngineStopped      `run()` after `stop()`
    ├── WorkerDied         the worker process died under a job (kill -9, segfault); it is restarted
    ├── RequestTooLarge    raised by a backend in the worker before the first step (reported as a
    │                      JobFailed of kind too_large)
    ├── InputImageUnreadable  a job's stored input image cannot be decoded (in the parent, before it runs)
    └── JobFailed          the worker answered that the job failed: `kind` is a `JobErrorKind`
                           (out_of_memory, too_large, timeout, cancelled, error)

Everything the worker process reports is mapped to one of these inside `engine/`; the chat side turns
them into words for users.
"""

from __future__ import annotations

from engine.messages import JobErrorKind


class EngineError(Exception):
    """Base of every error the engine raises."""


class EngineStartError(EngineError):
    """The worker could not start; the message names the cause and the fix."""


class EngineStopped(EngineError):
    """The supervisor was stopped; it runs no more jobs."""


class WorkerDied(EngineError):
    """The worker process died while it ran a job; the supervisor restarts it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestTooLarge(EngineError):
    """Raised by a backend before the first step: this card cannot make an image of that size."""


class InputImageUnreadable(EngineError):
    """A job's input image cannot be decoded: it cannot run, whatever the engine does."""


class JobFailed(EngineError):
    """The worker ran the job and reported a failure of this kind."""

    def __init__(self, kind: JobErrorKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
