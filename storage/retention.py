"""`storage.keep_images_days`: deleting old images on a schedule.

Every `image_cleanup_interval_s` the jobs that finished more than `keep_images_days` ago, were delivered
and still have an image lose it: the file is deleted first, then the row's image data is cleared, so a
crash in between only means the next round deletes an already missing file and clears the row. A job
that was never delivered keeps its picture whatever its age (it still has to be posted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from storage.images import ImageStore
from storage.queue import JobQueue

logger = logging.getLogger(__name__)


class ImageRetention:
    """Runs until `stop` is set; each round deletes what is older than `keep_days`."""

    def __init__(self, queue: JobQueue, images: ImageStore, *, keep_days: float, interval_s: float) -> None:
        self._queue = queue
        self._images = images
        self._keep_days = keep_days
        self._keep = timedelta(days=keep_days)
        self._interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("image retention: deleting images %g days after their job finished", self._keep_days)
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("image retention round failed; trying again in %.0f s", self._interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)

    async def run_once(self, now: datetime | None = None) -> int:
        """Delete the images due now; returns how many."""
        cutoff = (now or datetime.now(UTC)) - self._keep
        deleted = 0
        while jobs := await self._queue.images_to_expire(cutoff):
            for job in jobs:
                for image in job.images:  # every image of the job (result_path is image 0)
                    await self._images.delete(image.path)
                logger.info("image retention: deleted the %d image(s) of job=%d", len(job.images), job.id)
            await self._queue.forget_images([job.id for job in jobs])
            deleted += len(jobs)
        return deleted
