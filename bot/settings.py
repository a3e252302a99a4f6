"""Settings of the chat side: limits on requests, moderation, delivery, and what every platform's
section has (each platform's own section is in its folder)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator


class LimitsSettings(BaseModel):
    """What users may ask for (the `[limits]` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_prompt_length: int = Field(default=1000, ge=1, le=4000, description="Characters in a prompt.")
    max_negative_prompt_length: int = Field(default=500, ge=0, le=4000)
    min_steps: int = Field(default=1, ge=1)
    max_steps: int = Field(default=50, ge=1, le=100)
    min_side: int = Field(default=256, ge=16, description="Smallest width or height, in pixels.")
    max_side: int = Field(default=2048, ge=16, description="Largest width or height, in pixels.")
    max_pixels: int = Field(default=2048 * 2048, ge=256, description="Largest width x height.")
    max_active_jobs_per_user: int = Field(
        default=3, ge=1, description="Queued plus running jobs one user may have at once."
    )
    jobs_per_hour: int = Field(
        default=0, ge=0, description="Jobs one user may submit in any hour; 0: no limit."
    )
    admins_exempt_from_quota: bool = True
    default_images: int = Field(default=1, ge=1, le=4, description="Images per /imagine without --n.")
    max_images: int = Field(
        default=4, ge=1, le=4, description="Most images one /imagine may ask for (--n); one job for quotas."
    )
    max_input_image_bytes: int = Field(
        default=20 * 2**20, ge=1024, description="Largest image file an image prompt may send, in bytes."
    )
    max_input_image_pixels: int = Field(
        default=4096 * 4096,
        ge=256 * 256,
        description="Largest width x height of an image prompt's file (it is then sized to an allowed size).",
    )

    @model_validator(mode="after")
    def _sides_in_order(self) -> LimitsSettings:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is above max_side {self.max_side}")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} is above max_steps {self.max_steps}")
        if self.default_images > self.max_images:
            raise ValueError(f"default_images {self.default_images} is above max_images {self.max_images}")
        return self


def _valid_pattern(pattern: str) -> str:
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    if re.fullmatch(pattern, "", re.IGNORECASE) is not None or not pattern.strip():
        raise ValueError("matches an empty text, so it would match every prompt")
    return pattern


def _valid_word(word: str) -> str:
    if not word.strip():
        raise ValueError("an empty word matches nothing; remove it")
    return word.strip()


Pattern = Annotated[str, AfterValidator(_valid_pattern)]
Word = Annotated[str, AfterValidator(_valid_word)]


class ModerationSettings(BaseModel):
    """Words and patterns checked in every prompt (the `[moderation]` section).

    Words match whole words (or phrases), ignoring case; patterns are Python regular expressions,
    searched anywhere in the prompt, ignoring case.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    banned_words: tuple[Word, ...] = Field(default=(), description="A prompt with one is refused.")
    banned_patterns: tuple[Pattern, ...] = ()
    spoiler_words: tuple[Word, ...] = Field(
        default=(), description="A picture from a prompt with one is posted as a spoiler."
    )
    spoiler_patterns: tuple[Pattern, ...] = ()


class VariationsSettings(BaseModel):
    """Vary, upscale and image prompts (the `[variations]` section): denoising strengths, 0 keeps the
    image, 1 ignores it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subtle_strength: float = Field(default=0.35, ge=0.1, le=1.0, description="Vary (Subtle).")
    strong_strength: float = Field(default=0.7, ge=0.1, le=1.0, description="Vary (Strong).")
    upscale_strength: float = Field(
        default=0.3, ge=0.1, le=1.0, description="Upscale 2x: how much the enlarged image is redrawn."
    )
    image_prompt_strength: float = Field(
        default=0.8, ge=0.1, le=1.0, description="An image prompt without --strength."
    )


class DeliverySettings(BaseModel):
    """Posting finished jobs (the `[delivery]` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_for_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="Keep trying to post a finished job this long while the platform is unreachable; "
        "then tell the user to fetch it with /show.",
    )
    retry_backoff_s: tuple[float, float] = Field(
        default=(2.0, 60.0), description="Pause after a failed post: MIN seconds, doubling up to MAX."
    )
    post_timeout_s: float = Field(default=120.0, gt=0, description="One post (an image upload) at most.")
    cleanup_timeout_s: float = Field(
        default=30.0, gt=0, description="Tidying up after a post (deleting the status message) at most."
    )

    @model_validator(mode="after")
    def _backoff_in_order(self) -> DeliverySettings:
        low, high = self.retry_backoff_s
        if not 0 < low <= high:
            shown = list(self.retry_backoff_s)
            raise ValueError(f"retry_backoff_s {shown} must be [MIN, MAX] with 0 < MIN <= MAX")
        return self


class PlatformSettings(BaseModel):
    """What every chat platform's section has (`bot/<platform>/settings.py` subclasses it): the bot's
    token, whose presence turns the adapter on, and the platform's operators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr | None = None

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def operator_ids(self) -> frozenset[str]:
        """The users who may ban and unban, as the platform's ids in text (as `Requester.user_id`)."""
        return frozenset()

    def secrets(self) -> list[str]:
        """Every secret set in this section (its `SecretStr` fields), to be scrubbed from the logs."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return [value.get_secret_value() for value in values if isinstance(value, SecretStr)]
