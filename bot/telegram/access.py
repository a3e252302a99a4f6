"""Who may use the bot on Telegram: allowlists of users and chats, and who is an admin."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import TelegramSettings


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Empty allowlists mean everyone; admins pass every allowlist."""

    allowed_user_ids: frozenset[int]
    allowed_chat_ids: frozenset[int]
    admin_user_ids: frozenset[int]

    @classmethod
    def from_settings(cls, settings: TelegramSettings) -> AccessPolicy:
        return cls(
            allowed_user_ids=frozenset(settings.allowed_user_ids),
            allowed_chat_ids=frozenset(settings.allowed_chat_ids),
            admin_user_ids=frozenset(settings.admin_user_ids),
        )

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admin_user_ids

    def allows(self, user_id: int, chat_id: int) -> bool:
        if self.is_admin(user_id):
            return True
        user_ok = not self.allowed_user_ids or user_id in self.allowed_user_ids
        chat_ok = not self.allowed_chat_ids or chat_id in self.allowed_chat_ids
        return user_ok and chat_ok
