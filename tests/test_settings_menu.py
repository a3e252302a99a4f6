"""The /settings menu as data: press keys that decode after a restart (and fit Telegram's 64 bytes),
and the two-level layout drawn from `SettingsView.options`."""

from __future__ import annotations

import pytest

from bot.settings import LimitsSettings
from bot.settings_menu import SettingPress, settings_menu
from bot.user_settings import SettingName, UserSettings, settings_view


@pytest.mark.parametrize(
    "press",
    [
        SettingPress(),
        SettingPress(reset=True),
        SettingPress(SettingName.ASPECT),
        SettingPress(SettingName.ASPECT, "16:9"),
        SettingPress(SettingName.STEPS, "default"),
        SettingPress(SettingName.PROGRESS, "off"),
    ],
)
def test_a_press_is_read_back_from_its_key(press: SettingPress) -> None:
    assert SettingPress.parse(press.key) == press
    assert len(press.key.encode()) <= 64


@pytest.mark.parametrize(
    "key", [None, "", "reroll:42", "set:", "set:colour=red", "set:ar=", "set:ar=" + "9" * 40, "set:Ar"]
)
def test_keys_this_bot_never_made_are_not_presses(key: str | None) -> None:
    assert SettingPress.parse(key) is None


def test_the_menu_offers_each_setting_with_choices_then_its_values() -> None:
    limits = LimitsSettings(max_steps=100)
    view = settings_view(UserSettings(aspect_ratio="16:9"), limits, default_steps=20)

    top = settings_menu(view)
    assert [[button.press.key for button in row] for row in top] == [
        ["set:ar"],
        ["set:steps"],
        ["set:images"],
        ["set:progress"],
        ["set:reset"],
    ]
    assert top[0][0].label == "Aspect ratio: 16:9"

    choices = settings_menu(view, SettingName.ASPECT)
    keys = [button.press.key for row in choices for button in row]
    aspect = next(option for option in view.options if option.name is SettingName.ASPECT)
    assert keys == [f"set:ar={choice}" for choice in aspect.choices] + ["set:menu"]
    assert all(len(row) <= 4 for row in choices)
    assert [b.label for row in choices for b in row if b.label.startswith("✓")] == ["✓ 16:9"]
    # Typed settings have no choices: asking for theirs shows the top menu.
    assert settings_menu(view, SettingName.STYLE) == top
