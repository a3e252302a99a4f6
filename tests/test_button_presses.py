"""Reading a pressed button's callback data: only keys this bot made and the pressed message offers,
and settings menus only for whoever asked for them."""

from __future__ import annotations

import pytest

from bot import texts
from bot.button_presses import read_press
from bot.chat_commands import Refused
from bot.job_view import ButtonAction, ButtonPress
from bot.settings_menu import SettingPress
from bot.user_settings import SettingName

REROLL = ButtonPress(ButtonAction.REROLL, 42)
ASPECT = SettingPress(SettingName.ASPECT, "16:9")


def test_a_key_the_message_offers_is_its_press() -> None:
    assert read_press("reroll:42", "7", offered={"reroll:42", "delete:42"}, menu_owner=None) == REROLL
    assert read_press("set:ar=16:9", "7", offered={"set:ar=16:9"}, menu_owner="7") == ASPECT


def test_without_the_message_the_key_alone_decides() -> None:
    # Telegram leaves out messages too old to show; the service's checks still apply to the press.
    assert read_press("reroll:42", "7", offered=None, menu_owner=None) == REROLL
    assert read_press("upscale:42:2", "7", offered=None, menu_owner=None) == ButtonPress(
        ButtonAction.UPSCALE, 42, 1
    )


@pytest.mark.parametrize(
    ("key", "offered"),
    [
        ("reroll:43", {"reroll:42"}),  # forged: a job the message is not about
        ("reroll:42", frozenset()),  # a message without buttons
        ("details:42", {"reroll:42"}),  # a button the message does not have
        ("majicbot:reroll:42", None),  # never made by this bot
        ("", None),
        (None, None),
    ],
)
def test_keys_not_made_or_not_offered_are_refused(key: str | None, offered: set[str] | None) -> None:
    assert read_press(key, "7", offered=offered, menu_owner=None) == Refused(texts.UNKNOWN_BUTTON)


def test_a_settings_press_on_someone_elses_menu_is_refused() -> None:
    refused = read_press("set:ar=16:9", "7", offered={"set:ar=16:9"}, menu_owner="8")
    assert refused == Refused("These are someone else's settings; send /settings for yours.")
    # A job's buttons under someone else's message are the service's business (who may see what).
    assert read_press("reroll:42", "7", offered={"reroll:42"}, menu_owner="8") == REROLL
