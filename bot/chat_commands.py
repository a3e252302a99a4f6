"""Every chat command and button press as one call that answers with data, for any adapter to render.

An adapter admits the event at its entrance (`bot.entrance`), reads it into one call here, and renders
the `Answer`: words (`Reply`), a queued job (`Queued`, shown by the presenter's status line), a picture
to post (`Shown`), a file (`Picture`), a job's details (`Details`), a posted picture to take down
(`Deleted`), the user's settings with their menus (`SettingsShown`; `bot.settings_menu`) or a refusal
(`Refused`). Mistakes raise `bot.errors.UserFacingError`; `bot.entrance.serve` makes its text the
answer.

Every command runs through `run`, with the options the user gave by name (`bot.command_table`); a
platform that only has text gets every command by calling `text_command` (`bot.typed_commands`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot import texts
from bot.access import Caller
from bot.command_parser import ImagineArgs, read_imagine, with_options
from bot.command_table import ImageFetch, OptionValues
from bot.errors import InvalidRequest
from bot.job_view import ButtonAction, ButtonPress, ButtonSpec, history_buttons
from bot.service import BotService, Picture
from bot.settings import LimitsSettings
from bot.settings_menu import SettingPress
from bot.standing import Queued
from bot.typed_commands import read_options
from bot.user_settings import SettingName, SettingsView
from storage.jobs import Job

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    buttons: tuple[ButtonSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Shown:
    """A finished picture to post again (for /show)."""

    job: Job


@dataclass(frozen=True, slots=True)
class Details:
    """Everything about a job (the Details button): `text`, for an embed or a message."""

    job: Job
    text: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """The pressed message holds this job's picture: take it down."""

    job: Job


@dataclass(frozen=True, slots=True)
class Refused:
    """The call was refused or failed (`bot.entrance`): `text` says why and what to do."""

    text: str


@dataclass(frozen=True, slots=True)
class SettingsShown:
    """The user's settings to show (with their menus); `open_setting`: the setting whose choices a
    two-level menu shows now (None: the top menu)."""

    view: SettingsView
    open_setting: SettingName | None = None


Answer = Reply | Queued | Shown | Picture | Details | Deleted | SettingsShown | Refused

# A user as a platform writes them in text: the id, or a Discord mention (<@123>, <@!123>).
_MENTION = re.compile(r"<@!?([0-9]+)>")


class ChatCommands:
    """The commands both adapters offer, over `BotService`."""

    def __init__(self, service: BotService, limits: LimitsSettings) -> None:
        self.service = service
        self.limits = limits

    async def imagine(self, caller: Caller, args: ImagineArgs, image: bytes | None = None) -> Queued:
        """`args` as read from the platform (with --n and --strength), and the image the user sent
        with it (an image prompt); the service checks them, once."""
        return await self.service.imagine(
            caller.requester,
            args,
            is_admin=caller.is_admin,
            count=args.count,
            image=image,
            strength=args.strength,
        )

    async def reroll(self, caller: Caller, seed: int | None = None, job_id: int | None = None) -> Queued:
        return await self.service.reroll(caller.requester, seed=seed, job_id=job_id, is_admin=caller.is_admin)

    async def history(self, caller: Caller) -> Reply:
        jobs = await self.service.history(caller.requester, 10)
        return Reply(texts.history_text(jobs), history_buttons(jobs))

    async def queue(self, caller: Caller) -> Reply:
        return Reply(texts.queue_text(await self.service.queue_overview(caller.requester)))

    async def cancel(self, caller: Caller, job_id: int | None = None) -> Reply:
        cancelled = await self.service.cancel(caller.requester, job_id, is_admin=caller.is_admin)
        logger.info(
            "cancelled from %s by user %s job=%d",
            caller.requester.platform,
            caller.requester.user_id,
            cancelled.id,
        )
        return Reply(texts.cancelled_text(cancelled))

    async def show(self, caller: Caller, job_id: int) -> Shown:
        return Shown(await self.service.show(caller.requester, job_id, is_admin=caller.is_admin))

    def help(self, *, typed: bool = False) -> Reply:
        """/help from `COMMAND_TABLE`; `typed`: usage as written on a text-only platform."""
        return Reply(texts.help_text(self.limits, typed=typed))

    async def admit(self, caller: Caller) -> None:
        """Raise Banned (its text is the refusal) for a banned user: each adapter calls it once at its
        entrance, after the access rule, for every command and button press."""
        await self.service.check_not_banned(caller.requester)

    async def settings(
        self,
        caller: Caller,
        changes: Sequence[tuple[SettingName | str, str]] = (),
        *,
        reset: bool = False,
    ) -> SettingsShown:
        """/settings: show them, or first reset them, then make each (name, value) change in order."""
        requester = caller.requester
        view = await self.service.reset_settings(requester) if reset else None
        for name, value in changes:
            view = await self.service.update_settings(requester, name, value)
        return SettingsShown(view or await self.service.settings(requester))

    async def ban(self, caller: Caller, user: str, reason: str = "") -> Reply:
        """/ban <user id or mention> [reason] (operators only; the service says so to others)."""
        ban = await self.service.ban(caller.requester, _user_id(user), reason=reason)
        return Reply(texts.banned_text(ban))

    async def unban(self, caller: Caller, user: str) -> Reply:
        ban = await self.service.unban(caller.requester, _user_id(user))
        return Reply(texts.unbanned_text(ban))

    async def bans(self, caller: Caller) -> Reply:
        return Reply(texts.bans_text(await self.service.bans(caller.requester)))

    async def run(self, caller: Caller, name: str, values: OptionValues) -> Answer:
        """Command `name` of `COMMAND_TABLE` with the options the user gave, by name, whichever
        platform read them (Discord's typed options, or `text_command`)."""
        if name == "imagine":
            # Only read here: the service checks the merged arguments, once.
            args = with_options(
                read_imagine(values.text("prompt") or "", self.limits),
                self.limits,
                seed=values.integer("seed"),
                steps=values.integer("steps"),
                aspect=values.text("aspect"),
                negative_prompt=values.text("negative"),
                count=values.integer("n"),
                strength=values.number("strength"),
            )
            fetch = values.image("image")
            return await self.imagine(caller, args, None if fetch is None else await fetch())
        if name == "reroll":
            return await self.reroll(caller, values.integer("seed"), values.integer("job"))
        if name == "cancel":
            return await self.cancel(caller, values.integer("job"))
        if name == "show":
            job_id = values.integer("job")
            if job_id is None:
                raise InvalidRequest("Write /show <job id>, e.g. /show 42 (/history lists yours).")
            return await self.show(caller, job_id)
        if name == "settings":
            # Discord's options are two of the settings; a typed /settings may name any of them.
            changes = [(n, v) for n in SettingName if (v := values.text(n)) is not None]
            return await self.settings(caller, changes, reset=values.boolean("reset"))
        if name in ("ban", "unban"):
            # Without an id the service still says who may ban first, then how to write it.
            user = values.text("user") or ""
            if name == "ban":
                return await self.ban(caller, user, values.text("reason") or "")
            return await self.unban(caller, user)
        calls = {"history": self.history, "queue": self.queue, "bans": self.bans}
        if name in calls:
            return await calls[name](caller)
        if name == "help":
            return self.help()
        raise InvalidRequest(texts.unknown_command_text(name))

    async def text_command(
        self, caller: Caller, name: str, argument: str, image: ImageFetch | None = None
    ) -> Answer:
        """A typed command: `argument` is the text after it (/imagine's prompt with its flags,
        /reroll [seed] [job id], /cancel [job id], /show <job id>, /settings [reset | <name> <value>],
        /ban <user id> [reason], /unban <user id>), `image` the picture sent with an /imagine."""
        return await self.run(caller, name, read_options(name, argument, image))

    async def press(self, caller: Caller, press: ButtonPress | SettingPress) -> Answer:
        """What a button under a job, or a settings button or select, does; every rule (who may see
        or delete what) is the service's."""
        if isinstance(press, SettingPress):
            return await self._setting_press(caller, press)
        requester, job_id, is_admin = caller.requester, press.job_id, caller.is_admin
        if press.action is ButtonAction.REROLL:
            return await self.service.reroll(requester, job_id=job_id, from_button=True, is_admin=is_admin)
        if press.action is ButtonAction.RETRY:
            return await self.service.retry(requester, job_id, is_admin=is_admin)
        if press.action is ButtonAction.ORIGINAL:
            return await self.service.original_png(requester, job_id, is_admin=is_admin)
        if press.action is ButtonAction.UPSCALE:
            return await self.service.upscale(requester, job_id, press.image, is_admin=is_admin)
        if press.action in (ButtonAction.VARY_SUBTLE, ButtonAction.VARY_STRONG):
            strong = press.action is ButtonAction.VARY_STRONG
            return await self.service.vary(requester, job_id, press.image, strong=strong, is_admin=is_admin)
        if press.action is ButtonAction.DETAILS:
            job = await self.service.visible_job(requester, job_id, is_admin=is_admin)
            return Details(job, texts.details_text(job))
        return Deleted(await self.service.job_for_owner_or_admin(requester, job_id, is_admin=is_admin))

    async def _setting_press(self, caller: Caller, press: SettingPress) -> SettingsShown:
        if press.reset:
            return await self.settings(caller, reset=True)
        if press.name is not None and press.value is not None:
            return await self.settings(caller, ((press.name, press.value),))
        return SettingsShown(await self.service.settings(caller.requester), open_setting=press.name)


def _user_id(text: str) -> str:
    """The id in a user's id or mention; anything else as given, for the service to refuse."""
    text = text.strip()
    mention = _MENTION.fullmatch(text)
    return mention[1] if mention else text
