"""`bot.job_view.ButtonSpec`s as an inline keyboard. callback_data is the press's key (``reroll:42``,
within Telegram's 64 bytes); the rest is read from the database, so a button works after a restart."""

from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.job_view import ButtonSpec, button_rows
from bot.settings_menu import MenuButton

PER_ROW = 5  # short rows stay readable on a phone (U1..U4, V1..V4 are a row each)


def markup(buttons: Sequence[ButtonSpec]) -> InlineKeyboardMarkup | None:
    """The keyboard for `buttons` in their rows, five to a row at most; None for no buttons."""
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    f"{spec.emoji} {spec.label}" if spec.emoji else spec.label, callback_data=spec.press.key
                )
                for spec in row
            ]
            for row in button_rows(buttons, PER_ROW)
        ]
    )


def menu_markup(rows: Sequence[Sequence[MenuButton]]) -> InlineKeyboardMarkup:
    """The /settings menu (`bot.settings_menu.settings_menu`), row for row."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(key.label, callback_data=key.press.key) for key in row] for row in rows]
    )
