"""The `[telegram]` section (pydantic only: read by the config without loading python-telegram-bot)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from bot.settings import PlatformSettings


class TelegramSettings(PlatformSettings):
    """The adapter runs when a token is set (here or MAJICBOT_TELEGRAM_TOKEN)."""

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

    def operator_ids(self) -> frozenset[str]:
        return frozenset(str(user) for user in self.admin_user_ids)

    @model_validator(mode="after")
    def _webhook_complete(self) -> TelegramSettings:
        if self.mode == "webhook" and (self.webhook_url is None or self.webhook_secret is None):
            raise ValueError('mode "webhook" needs webhook_url and webhook_secret')
        return self
