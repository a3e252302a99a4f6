"""A button press as it arrives on a platform whose buttons carry their key as text (callback data):
which press it is, and whether to take it.

A client can send any data with a press, so a press is taken only when this bot made its key
(`ButtonPress.parse`, `SettingPress.parse`) and the pressed message offers that key, where the platform
says which keys it offers. A settings menu posted in a group is seen by everyone: a press on someone
else's menu would show the presser's settings in the asker's menu, so it is refused too.
"""

from __future__ import annotations

from collections.abc import Collection

from bot import texts
from bot.chat_commands import Refused
from bot.job_view import ButtonPress
from bot.settings_menu import SettingPress

Press = ButtonPress | SettingPress


def read_press(
    key: str | None, presser: str, *, offered: Collection[str] | None, menu_owner: str | None
) -> Press | Refused:
    """The press behind `key`, or the refusal to show `presser` (a user id): a key this bot never made
    or that the pressed message does not offer (`offered`: its buttons' keys; None when the platform
    left the message out, and the service's checks still apply), or a settings press on a menu that
    answers someone else's /settings (`menu_owner`: who asked for it; None when not known)."""
    press = ButtonPress.parse(key) or SettingPress.parse(key)
    if press is None or (offered is not None and key not in offered):
        return Refused(texts.UNKNOWN_BUTTON)
    if isinstance(press, SettingPress) and menu_owner not in (None, presser):
        return Refused(texts.OTHERS_MENU)
    return press
