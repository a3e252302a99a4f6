"""Settings of the chat side: limits on requests and the two chat platforms."""

from __future__ import annotations

import re
from typing import Annotated, Literal

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
    max_images_per_command: int = Field(
        default=4, ge=1, le=10, description="The most images a user may choose in /settings."
    )

    @model_validator(mode="after")
    def _sides_in_order(self) -> LimitsSettings:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is above max_side {self.max_side}")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} is above max_steps {self.max_steps}")
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
        default=(), description="A picture from a prompt with one is posted as a spoiler (Discord)."
    )
    spoiler_patterns: tuple[Pattern, ...] = ()


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


class DiscordSettings(BaseModel):
    """The `[discord]` section. The adapter runs when a token is set (here or MAJICBOT_DISCORD_TOKEN)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr | None = None
    sync_guild_ids: tuple[int, ...] = Field(
        default=(), description="Sync slash commands to these guilds (instant); empty: globally."
    )
    allowed_guild_ids: tuple[int, ...] = ()
    allowed_channel_ids: tuple[int, ...] = ()
    allowed_role_ids: tuple[int, ...] = ()
    admin_user_ids: tuple[int, ...] = ()
    allow_dms: bool = True
    progress_edit_interval_s: float = Field(default=2.0, ge=1.0)
    api_base_url: str | None = Field(default=None, description="REST base, e.g. http://proxy/api/v10")
    gateway_url: str | None = Field(default=None, description="Gateway websocket URL, e.g. ws://proxy/")


class TelegramSettings(BaseModel):
    """The `[telegram]` section. The adapter runs when a token is set (here or MAJICBOT_TELEGRAM_TOKEN)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr | None = None
    allowed_user_ids: tuple[int, ...] = ()
    allowed_chat_ids: tuple[int, ...] = ()
    admin_user_ids: tuple[int, ...] = ()
    base_url: str = Field(default="https://api.telegram.org/bot", description="Bot API base (self-hosted).")
    base_file_url: str = "https://api.telegram.org/file/bot"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = Field(default=None, description="Public HTTPS URL Telegram posts updates to.")
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    webhook_secret: SecretStr | None = None
    progress_interval_private_s: float = Field(default=1.0, ge=0.5)
    progress_interval_group_s: float = Field(default=3.0, ge=3.0)
    group_reply_batch_s: float = Field(
        default=0.5,
        ge=0,
        le=5,
        description="In groups, answers to commands arriving within this many seconds share one message.",
    )

    @model_validator(mode="after")
    def _webhook_complete(self) -> TelegramSettings:
        if self.mode == "webhook" and (self.webhook_url is None or self.webhook_secret is None):
            raise ValueError('mode "webhook" needs webhook_url and webhook_secret')
        return self
