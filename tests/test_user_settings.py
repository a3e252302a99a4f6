"""UserSettings: values checked against the parser's table and the limits, applied where no flag was
given, read back tolerantly after the limits changed, and shown the same way on both platforms."""

from __future__ import annotations

import pytest

from bot.command_parser import ASPECT_RATIOS, ImagineArgs, parse_imagine
from bot.errors import InvalidRequest
from bot.request_rules import resolve_request
from bot.settings import LimitsSettings
from bot.user_settings import (
    DEFAULT,
    SettingName,
    SettingsCommand,
    UserSettings,
    parse_settings_command,
    read_setting_name,
    settings_view,
)
from engine.settings import EngineSettings
from storage.user_settings import StoredSettings

LIMITS = LimitsSettings(max_steps=40, max_prompt_length=60, max_negative_prompt_length=30)


def test_values_are_read_from_text_and_checked() -> None:
    settings = UserSettings()
    settings = settings.with_value(SettingName.ASPECT, "16/9", LIMITS)
    settings = settings.with_value(SettingName.STEPS, "28", LIMITS)
    settings = settings.with_value(SettingName.IMAGES, "2", LIMITS)
    settings = settings.with_value(SettingName.NEGATIVE, "  text, watermark ", LIMITS)
    settings = settings.with_value(SettingName.STYLE, "watercolor", LIMITS)
    settings = settings.with_value(SettingName.PROGRESS, "Off", LIMITS)
    assert settings == UserSettings("16:9", 28, 2, "text, watermark", "watercolor", False)
    # "default" (or "off" for the texts) puts one back.
    assert settings.with_value(SettingName.STEPS, "default", LIMITS).steps is None
    assert settings.with_value(SettingName.ASPECT, "DEFAULT", LIMITS).aspect_ratio is None
    assert settings.with_value(SettingName.STYLE, "off", LIMITS).style_suffix == ""
    assert settings.with_value(SettingName.PROGRESS, "on", LIMITS).show_progress


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (SettingName.ASPECT, "5:4", r"^\"5:4\" is not an aspect ratio I know\. Use one of 1:1, 16:9"),
        (SettingName.STEPS, "41", r"^Steps 41 is out of range: use a whole number from 1 to 40"),
        (SettingName.STEPS, "0", r"from 1 to 40"),
        (
            SettingName.STEPS,
            "many",
            r'^Steps must be a whole number, e\.g\. /settings steps 28 \(got "many"\)',
        ),
        (SettingName.IMAGES, "5", r"^Images 5 is out of range: use a whole number from 1 to 4"),
        (SettingName.NEGATIVE, "x" * 31, r"31 characters long; the limit is 30"),
        (SettingName.STYLE, "x" * 31, r"31 characters long; the limit is 30, so that half of a prompt"),
        (SettingName.PROGRESS, "maybe", r'^Progress updates are "on" or "off"'),
    ],
)
def test_values_out_of_range_say_how_to_write_them(name: SettingName, value: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        UserSettings().with_value(name, value, LIMITS)


def test_every_aspect_ratio_of_the_parser_is_allowed() -> None:
    for ratio in ASPECT_RATIOS:
        assert UserSettings().with_value(SettingName.ASPECT, ratio, LIMITS).aspect_ratio == ratio


def test_settings_fill_only_what_the_flags_left_unset() -> None:
    settings = UserSettings("16:9", 30, negative_prompt="blurry", style_suffix="oil painting")
    filled = settings.apply(parse_imagine("a fox", LIMITS), LIMITS)
    assert filled == ImagineArgs("a fox, oil painting", "blurry", None, 30, 1360, 768)
    given = settings.apply(parse_imagine("a fox --steps 9 --size 512x512 --no people", LIMITS), LIMITS)
    assert given == ImagineArgs("a fox, oil painting", "people", None, 9, 512, 512)
    # --ar on the command wins over the stored ratio too.
    assert settings.apply(parse_imagine("a fox --ar 1:1", LIMITS), LIMITS).width == 1024


def test_unset_settings_leave_the_operators_defaults() -> None:
    args = UserSettings().apply(parse_imagine("a fox", LIMITS), LIMITS)
    request = resolve_request(args, LIMITS, EngineSettings(default_steps=12))
    assert (request.prompt, request.negative_prompt, request.steps) == ("a fox", "", 12)
    assert (request.width, request.height) == (1024, 1024)


def test_the_style_suffix_joins_the_prompt_once() -> None:
    settings = UserSettings(style_suffix="oil painting")
    assert settings.apply(ImagineArgs("a fox."), LIMITS).prompt == "a fox. oil painting"
    assert settings.apply(ImagineArgs("a fox, Oil Painting"), LIMITS).prompt == "a fox, Oil Painting"
    # An empty prompt stays empty, so the parser's message about it is what the user reads.
    assert settings.apply(ImagineArgs("  "), LIMITS).prompt == ""


def test_a_prompt_that_fits_only_without_the_suffix_is_refused_with_why() -> None:
    settings = UserSettings(style_suffix="s" * 20)
    with pytest.raises(InvalidRequest, match=r"^Your prompt with your style suffix .* is 62 characters long"):
        settings.apply(ImagineArgs("p" * 40), LIMITS)


def test_stored_values_are_brought_into_todays_limits() -> None:
    stored = StoredSettings("16:9", 80, 9, "n" * 31, "s" * 31, False)
    assert UserSettings.from_stored(stored, LIMITS) == UserSettings("16:9", 40, 4, "", "", False)
    assert UserSettings.from_stored(StoredSettings(aspect_ratio="7:5"), LIMITS).aspect_ratio is None
    assert UserSettings.from_stored(StoredSettings(), LIMITS) == UserSettings()
    settings = UserSettings("3:2", 20, 2, "n", "s", False)
    assert UserSettings.from_stored(settings.to_stored(), LIMITS) == settings


def test_settings_commands_are_read_from_text() -> None:
    assert parse_settings_command("") == SettingsCommand()
    assert parse_settings_command(" reset ") == SettingsCommand(reset=True)
    assert parse_settings_command("style oil painting, muted") == SettingsCommand(
        name=SettingName.STYLE, value="oil painting, muted"
    )
    assert parse_settings_command("--no text") == SettingsCommand(name=SettingName.NEGATIVE, value="text")
    assert read_setting_name("Aspect") is SettingName.ASPECT
    with pytest.raises(InvalidRequest, match=r'^"colour" is not a setting\. The settings are: ar, steps'):
        parse_settings_command("colour red")
    with pytest.raises(InvalidRequest, match=r"^Give a value for steps, e\.g\. /settings steps 28"):
        parse_settings_command("steps")


def test_the_view_shows_values_and_offers_choices() -> None:
    settings = UserSettings("16:9", None, 2, "", "oil painting", False)
    view = settings_view(settings, LimitsSettings(max_steps=100), default_steps=20)
    assert "Aspect ratio: 16:9, 1360x768" in view.text
    assert "Steps: 20 (the default)" in view.text
    assert 'Style suffix: "oil painting"' in view.text
    assert "Negative prompt: none" in view.text
    assert "Progress updates: off" in view.text
    options = {option.name: option for option in view.options}
    assert options[SettingName.ASPECT].choices == (DEFAULT, *ASPECT_RATIOS)
    assert options[SettingName.ASPECT].current == "16:9"
    assert options[SettingName.STEPS].current == DEFAULT
    # A select menu holds 25 options at most; the range's ends and the default are offered.
    steps = options[SettingName.STEPS].choices
    assert len(steps) <= 25 and {"1", "20", "100"} <= set(steps)
    assert options[SettingName.IMAGES].choices == ("1", "2", "3", "4")
    assert options[SettingName.PROGRESS].current == "off"
    assert options[SettingName.STYLE].choices == ()
    # Every offered value is accepted as it is.
    for option in view.options:
        for choice in option.choices:
            settings.with_value(option.name, choice, LimitsSettings(max_steps=100))
