"""/settings as menus: what a press on a settings button or select means, and the two-level keyboard
(pick a setting, then its value) as data, for any adapter to render.

A press carries all it needs in its key (``set:ar=16:9``, at most 40 bytes: within Telegram's 64 and
Discord's 100) and nothing about the message, so a menu posted before a restart still works; the value
is checked by the service like a typed one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.user_settings import SettingName, SettingsView

PREFIX = "set:"
MAX_VALUE = 32
PER_ROW = 4


@dataclass(frozen=True, slots=True)
class SettingPress:
    """Open a setting's choices (`value` None), choose one, go back to the top menu (`name` None), or
    put every setting back (`reset`)."""

    name: SettingName | None = None
    value: str | None = None
    reset: bool = False

    @property
    def key(self) -> str:
        if self.reset:
            return f"{PREFIX}reset"
        if self.name is None:
            return f"{PREFIX}menu"
        return f"{PREFIX}{self.name}" if self.value is None else f"{PREFIX}{self.name}={self.value}"

    @classmethod
    def parse(cls, key: str | None) -> SettingPress | None:
        """The press behind `key`, or None for keys this bot never made."""
        if key is None or not key.startswith(PREFIX):
            return None
        body = key.removeprefix(PREFIX)
        if body == "reset":
            return cls(reset=True)
        if body == "menu":
            return cls()
        name, chose, value = body.partition("=")
        if name not in set(SettingName) or (chose and not 0 < len(value) <= MAX_VALUE):
            return None
        return cls(SettingName(name), value if chose else None)


@dataclass(frozen=True, slots=True)
class MenuButton:
    label: str
    press: SettingPress


def settings_menu(
    view: SettingsView, open_setting: SettingName | None = None
) -> tuple[tuple[MenuButton, ...], ...]:
    """Rows of buttons: a row per setting that has choices and "Reset all" (the top menu), or the
    choices of `open_setting` (the current one ticked) and "Back". Typed settings (negative prompt,
    style suffix) have no choices: the text says how to type them."""
    option = next((o for o in view.options if o.name is open_setting and o.choices), None)
    if option is None:
        rows: list[tuple[MenuButton, ...]] = [
            (MenuButton(f"{o.label}: {o.current}", SettingPress(o.name)),) for o in view.options if o.choices
        ]
        return (*rows, (MenuButton("Reset all", SettingPress(reset=True)),))
    choices = [
        MenuButton(f"✓ {choice}" if choice == option.current else choice, SettingPress(option.name, choice))
        for choice in option.choices
    ]
    rows = [tuple(choices[start : start + PER_ROW]) for start in range(0, len(choices), PER_ROW)]
    return (*rows, (MenuButton("« Back", SettingPress()),))
