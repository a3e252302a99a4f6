"""Building `NewJob`s in tests with sensible defaults (the `make_new_job` fixture returns this)."""

from __future__ import annotations

from typing import Protocol

from bot.telegram import TELEGRAM
from storage.jobs import ImageRequest, JobOrigin, NewJob, Platform, Requester


class NewJobFactory(Protocol):
    def __call__(
        self,
        *,
        platform: Platform = ...,
        chat_id: str = ...,
        user_id: str = ...,
        user_name: str | None = ...,
        guild_id: str | None = ...,
        prompt: str = ...,
        negative_prompt: str = ...,
        seed: int = ...,
        steps: int = ...,
        width: int = ...,
        height: int = ...,
        guidance: float = ...,
        parent_id: int | None = ...,
        dedupe_key: str | None = ...,
        count: int = ...,
        strength: float | None = ...,
        input_png: bytes | None = ...,
        origin: JobOrigin = ...,
        parent_image_index: int | None = ...,
    ) -> NewJob: ...


def build_new_job(
    *,
    platform: Platform = TELEGRAM,
    chat_id: str = "100",
    user_id: str = "1",
    user_name: str | None = None,
    guild_id: str | None = None,
    prompt: str = "a cat",
    negative_prompt: str = "",
    seed: int = 1,
    steps: int = 4,
    width: int = 64,
    height: int = 64,
    guidance: float = 3.5,
    parent_id: int | None = None,
    dedupe_key: str | None = None,
    count: int = 1,
    strength: float | None = None,
    input_png: bytes | None = None,
    origin: JobOrigin = JobOrigin.NEW,
    parent_image_index: int | None = None,
) -> NewJob:
    """A small, valid job; user_name defaults to "user <user_id>"."""
    return NewJob(
        requester=Requester(
            platform=platform,
            chat_id=chat_id,
            user_id=user_id,
            user_name=user_name if user_name is not None else f"user {user_id}",
            guild_id=guild_id,
        ),
        request=ImageRequest(
            prompt=prompt,
            seed=seed,
            steps=steps,
            width=width,
            height=height,
            guidance=guidance,
            negative_prompt=negative_prompt,
            count=count,
            strength=strength,
        ),
        parent_id=parent_id,
        dedupe_key=dedupe_key,
        input_png=input_png,
        origin=origin,
        parent_image_index=parent_image_index,
    )
