"""Images without the queue: what `majicbot generate` runs, through the same worker as the bot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from engine.messages import WorkerReady
from engine.png_metadata import encode_result
from engine.settings import EngineSettings
from engine.stored_request import generation_request
from engine.supervisor import LoadProgressCallback, ProgressCallback, WorkerSupervisor
from storage.jobs import ImageRequest

CLI_JOB_ID = 0
"""The job id the worker sees (and logs) for a one-off image; queued jobs start at 1."""


async def generate_images(
    settings: EngineSettings,
    request: ImageRequest,
    on_progress: ProgressCallback | None = None,
    *,
    input_image: bytes | None = None,
    on_ready: Callable[[WorkerReady], None] | None = None,
    on_load_progress: LoadProgressCallback | None = None,
) -> list[bytes]:
    """Start a worker, make the request's `count` images (from `input_image`, an image file, at
    `request.strength` when given), stop the worker; return the PNGs (with their metadata) in order.

    Raises EngineStartError (e.g. model files missing: the message says to run `majicbot download`),
    InputImageUnreadable, JobFailed or WorkerDied.
    """
    wanted = await asyncio.to_thread(generation_request, request, input_image)
    supervisor = WorkerSupervisor(settings, on_load_progress=on_load_progress)
    try:
        ready = await supervisor.start()
        if on_ready is not None:
            on_ready(ready)
        result = await supervisor.run(CLI_JOB_ID, wanted, on_progress)
        return await asyncio.to_thread(encode_result, wanted, result)
    finally:
        await supervisor.stop()
