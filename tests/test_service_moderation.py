"""BotService's /settings and moderation against a real queue (SQLite and PostgreSQL): settings fill
what flags leave unset, banned words refuse, spoilers and progress are marked on the job, operators ban
and unban, and jobs_per_hour holds under a burst of commands."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
from sqlalchemy import update

from bot.command_parser import ImagineArgs, parse_imagine
from bot.discord import DISCORD
from bot.discord.settings import DiscordSettings
from bot.errors import Banned, InvalidRequest, NotAllowed, NothingToDo, PromptNotAllowed, RateLimited
from bot.moderation import Moderation, Operators
from bot.service import BotService
from bot.settings import LimitsSettings, ModerationSettings
from bot.telegram import TELEGRAM
from bot.telegram.settings import TelegramSettings
from bot.user_settings import SettingName
from engine.settings import EngineSettings
from storage.images import ImageStore
from storage.jobs import Requester
from storage.queue import JobQueue
from storage.tables import JobRow
from tests.support.services import build_service

pytestmark = pytest.mark.all_databases

OPERATOR = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="op")
ALICE = Requester(TELEGRAM, chat_id="100", user_id="2", user_name="alice")
BOB = Requester(TELEGRAM, chat_id="100", user_id="3", user_name="bob")
ALICE_ON_DISCORD = Requester(DISCORD, chat_id="100", user_id="2", user_name="alice")
MODERATION = ModerationSettings(banned_words=("forbidden",), spoiler_patterns=("spider",))
LIMITS = LimitsSettings(max_active_jobs_per_user=10)


def make_service(queue: JobQueue, image_store: ImageStore, limits: LimitsSettings = LIMITS) -> BotService:
    operators = Operators.from_sections(
        {DISCORD: DiscordSettings(), TELEGRAM: TelegramSettings(admin_user_ids=(1,))}
    )
    return build_service(
        queue,
        image_store,
        limits,
        EngineSettings(default_steps=20),
        moderation=Moderation(MODERATION, operators),
    )


@pytest.fixture
def service(queue: JobQueue, image_store: ImageStore) -> BotService:
    return make_service(queue, image_store)


async def test_settings_fill_what_the_command_leaves_unset(service: BotService) -> None:
    await service.update_settings(ALICE, "ar", "16:9")
    await service.update_settings(ALICE, SettingName.STEPS, "30")
    await service.update_settings(ALICE, "no", "blurry, text")
    view = await service.update_settings(ALICE, "style", "oil painting")
    assert "Aspect ratio: 16:9" in view.text and "Steps: 30" in view.text

    request = (await service.imagine(ALICE, parse_imagine("a fox", LIMITS))).job.request
    assert (request.prompt, request.negative_prompt, request.steps) == (
        "a fox, oil painting",
        "blurry, text",
        30,
    )
    assert (request.width, request.height) == (1360, 768)

    given = parse_imagine("a fox --steps 8 --size 512x512 --no people", LIMITS)
    request = (await service.imagine(ALICE, given)).job.request
    assert (request.prompt, request.negative_prompt, request.steps) == ("a fox, oil painting", "people", 8)
    assert (request.width, request.height) == (512, 512)

    # Settings are per user and per platform.
    for other in (BOB, ALICE_ON_DISCORD):
        request = (await service.imagine(other, ImagineArgs("a fox"))).job.request
        assert (request.prompt, request.steps, request.width) == ("a fox", 20, 1024)


async def test_reset_puts_every_default_back(service: BotService) -> None:
    await service.update_settings(ALICE, "steps", "30")
    await service.update_settings(ALICE, "progress", "off")
    view = await service.reset_settings(ALICE)
    assert "Steps: 20 (the default)" in view.text and "Progress updates: on" in view.text
    assert (await service.settings(ALICE)).settings == view.settings
    job = (await service.imagine(ALICE, ImagineArgs("a fox"))).job
    assert (job.request.steps, job.show_progress) == (20, True)


async def test_bad_values_change_nothing_and_say_how(service: BotService) -> None:
    await service.update_settings(ALICE, "steps", "30")
    with pytest.raises(InvalidRequest, match=r"^Steps 99 is out of range: use a whole number from 1 to 50"):
        await service.update_settings(ALICE, "steps", "99")
    with pytest.raises(InvalidRequest, match=r'^"size" is not a setting'):
        await service.update_settings(ALICE, "size", "1")
    assert (await service.settings(ALICE)).settings.steps == 30


async def test_progress_off_is_marked_on_the_users_jobs(service: BotService) -> None:
    await service.update_settings(ALICE, "progress", "off")
    queued = await service.imagine(ALICE, ImagineArgs("a fox"))
    assert not queued.job.show_progress
    rerolled = await service.reroll(ALICE)
    assert not rerolled.job.show_progress
    # Bob rerolls Alice's job: his own setting counts.
    assert (await service.reroll(BOB, job_id=queued.job.id)).job.show_progress


async def test_banned_words_are_refused_and_logged_without_the_prompt(
    service: BotService, queue: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(PromptNotAllowed, match=r"^Your prompt has a word or phrase that is not allowed"):
        await service.imagine(ALICE, ImagineArgs("a Forbidden secret castle"))
    assert await queue.active_jobs(TELEGRAM, "2") == []
    lines = [record.getMessage() for record in caplog.records]
    assert any("rule=word:'forbidden'" in line and "user=2" in line for line in lines)
    assert not any("secret castle" in line for line in lines)


async def test_a_banned_word_in_the_style_suffix_is_refused_when_saved(service: BotService) -> None:
    with pytest.raises(PromptNotAllowed, match=r"^That style suffix has"):
        await service.update_settings(ALICE, "style", "forbidden style")
    assert (await service.settings(ALICE)).settings.style_suffix == ""


async def test_a_suffix_saved_before_the_word_was_banned_is_named(
    queue: JobQueue, image_store: ImageStore
) -> None:
    await build_service(queue, image_store, LIMITS).update_settings(ALICE, "style", "forbidden style")
    with pytest.raises(PromptNotAllowed, match=r"^Your style suffix \(from /settings\)"):
        await make_service(queue, image_store).imagine(ALICE, ImagineArgs("a fox"))


async def test_a_reroll_is_checked_against_todays_list(queue: JobQueue, image_store: ImageStore) -> None:
    before = build_service(queue, image_store, LIMITS)
    job = (await before.imagine(ALICE, ImagineArgs("a forbidden fox"))).job
    with pytest.raises(PromptNotAllowed, match=rf"^The prompt of job #{job.id} has"):
        await make_service(queue, image_store).reroll(BOB, job_id=job.id)


async def test_spoiler_prompts_are_marked_on_the_job(service: BotService) -> None:
    assert (await service.imagine(ALICE, ImagineArgs("a giant SPIDER"))).job.spoiler
    assert not (await service.imagine(ALICE, ImagineArgs("a giant fox"))).job.spoiler
    await service.update_settings(BOB, "style", "spider webs")
    spooky = (await service.imagine(BOB, ImagineArgs("a house"))).job
    assert spooky.spoiler
    assert (await service.reroll(BOB, job_id=spooky.id)).job.spoiler


async def test_operators_ban_and_unban(service: BotService) -> None:
    assert service.is_operator(OPERATOR) and not service.is_operator(ALICE)
    with pytest.raises(NotAllowed, match=r"^Only the bot's operators"):
        await service.ban(ALICE, "3")
    with pytest.raises(NotAllowed, match=r"^Only the bot's operators"):
        await service.bans(ALICE)
    with pytest.raises(InvalidRequest, match=r"^Give the user's numeric id"):
        await service.ban(OPERATOR, "@alice")
    with pytest.raises(NotAllowed, match=r"^User 1 is an operator"):
        await service.ban(OPERATOR, "1")

    ban = await service.ban(OPERATOR, " 2 ", reason="spam")
    assert (ban.user_id, ban.banned_by, ban.reason) == ("2", "1", "spam")
    assert [b.user_id for b in await service.bans(OPERATOR)] == ["2"]
    refusal = r"^You are banned from using this bot \(reason: spam\)"
    with pytest.raises(Banned, match=refusal):
        await service.check_not_banned(ALICE)
    with pytest.raises(Banned, match=refusal):
        await service.imagine(ALICE, ImagineArgs("a fox"))
    with pytest.raises(Banned, match=refusal):
        await service.reroll(ALICE, job_id=(await service.imagine(BOB, ImagineArgs("a cat"))).job.id)
    with pytest.raises(Banned, match=refusal):
        await service.settings(ALICE)
    # The same user id on the other platform is someone else.
    await service.check_not_banned(ALICE_ON_DISCORD)

    await service.unban(OPERATOR, "2")
    await service.imagine(ALICE, ImagineArgs("a fox"))
    with pytest.raises(NothingToDo, match=r"^User 2 is not banned"):
        await service.unban(OPERATOR, "2")


async def test_jobs_per_hour_says_when_the_next_one_is_accepted(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(queue, image_store, LIMITS.model_copy(update={"jobs_per_hour": 2}))
    first = (await service.imagine(ALICE, ImagineArgs("one"))).job
    await service.cancel(ALICE, first.id)
    await service.imagine(ALICE, ImagineArgs("two"))
    with pytest.raises(RateLimited, match=r"^You have sent 2 jobs in the last hour, .* in (60|59) minutes"):
        await service.imagine(ALICE, ImagineArgs("three"))
    with pytest.raises(RateLimited):
        await service.reroll(ALICE)
    # Operators are exempt (admins_exempt_from_quota), like from the concurrent quota.
    for n in range(3):
        await service.imagine(OPERATOR, ImagineArgs(f"op {n}"), is_admin=True)
    # Once the first job is more than an hour old, it no longer counts.
    async with queue.database.write() as session:
        await session.execute(
            update(JobRow).where(JobRow.id == first.id).values(created_at=first.created_at.replace(year=2020))
        )
    await service.imagine(ALICE, ImagineArgs("three"))


USERS = 4
COMMANDS_PER_USER = 7
PER_HOUR = 3


async def test_a_burst_of_commands_accepts_exactly_jobs_per_hour(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(queue, image_store, LIMITS.model_copy(update={"jobs_per_hour": PER_HOUR}))
    users = [Requester(TELEGRAM, "100", f"{10 + n}", f"user {n}") for n in range(USERS)]
    outcomes = await asyncio.gather(
        *(service.imagine(user, ImagineArgs(f"cat {n}")) for n in range(COMMANDS_PER_USER) for user in users),
        return_exceptions=True,
    )
    refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert all(isinstance(outcome, RateLimited) for outcome in refused), refused
    assert len(refused) == (COMMANDS_PER_USER - PER_HOUR) * USERS
    queued = await queue.queued_in_fair_order()
    assert Counter(job.requester.user_id for job in queued) == {user.user_id: PER_HOUR for user in users}
