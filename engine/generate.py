"""One image without the queue: what `majicbot generate` runs, through the same worker as the bot."""

from __future__ import annotations

from collections.abc import Callable

from engine.claim_loop import generation_request
from engine.messages import WorkerReady
from engine.settings import EngineSettings
from engine.supervisor import ProgressCallback, WorkerSupervisor
from storage.jobs import ImageRequest

CLI_JOB_ID = 0
"""The job id the worker sees (and logs) for a one-off image; queued jobs start at 1."""


async def generate_one(
    settings: EngineSettings,
    request: ImageRequest,
    on_progress: ProgressCallback | None = None,
    *,
    on_ready: Callable[[WorkerReady], None] | None = None,
) -> bytes:
    """Start a worker, make one image, stop the worker; return the PNG (with its metadata).

    Raises EngineStartError (e.g. model files missing: the message says to run `majicbot download`),
    JobFailed or WorkerDied.
    """
    supervisor = WorkerSupervisor(settings)
    try:
        ready = await supervisor.start()
        if on_ready is not None:
            on_ready(ready)
        result = await supervisor.run(CLI_JOB_ID, generation_request(request), on_progress)
        return result.png
    finally:
        await supervisor.stop()
