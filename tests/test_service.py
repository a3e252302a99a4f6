"""BotService against a real SQLite queue: defaults, quota, positions, reroll, dedupe, cancel, access."""

from __future__ import annotations

import pytest

from bot.command_parser import MAX_SEED, ImagineArgs
from bot.discord import DISCORD
from bot.errors import InvalidRequest, NotAllowed, NothingToDo, QuotaExceeded
from bot.service import BotService
from bot.settings import LimitsSettings
from bot.telegram import TELEGRAM
from engine.settings import EngineSettings
from storage.images import ImageStore
from storage.jobs import Job, JobStatus, Requester
from storage.queue import JobQueue
from tests.support.services import build_service

pytestmark = pytest.mark.all_databases

ALICE = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="alice")
BOB = Requester(TELEGRAM, chat_id="100", user_id="2", user_name="bob")
BOB_ELSEWHERE = Requester(TELEGRAM, chat_id="999", user_id="2", user_name="bob")
ALICE_ON_DISCORD = Requester(DISCORD, chat_id="100", user_id="1", user_name="alice")


def make_service(
    queue: JobQueue, image_store: ImageStore, *, max_active: int = 3, admins_exempt: bool = True
) -> BotService:
    limits = LimitsSettings(max_active_jobs_per_user=max_active, admins_exempt_from_quota=admins_exempt)
    return build_service(queue, image_store, limits, EngineSettings(default_steps=20, default_guidance=3.5))


@pytest.fixture
def service(queue: JobQueue, image_store: ImageStore) -> BotService:
    return make_service(queue, image_store)


async def finish(queue: JobQueue, image_store: ImageStore, *, step_seconds: float = 0.5) -> Job:
    """Claim the next job and finish it with a stored image, as the claim loop would."""
    job = await queue.claim_next("test")
    assert job is not None
    stored = await image_store.save(job.id, job.request.seed, b"\x89PNG fake")
    duration = step_seconds * job.request.steps + 1.0
    return await queue.mark_done(job.id, stored, duration_s=duration, step_seconds=step_seconds)


async def test_imagine_fills_defaults_and_reports_position(service: BotService) -> None:
    queued = await service.imagine(ALICE, ImagineArgs("a red fox"))
    request = queued.job.request
    assert (request.prompt, request.steps, request.guidance) == ("a red fox", 20, 3.5)
    assert (request.width, request.height) == (1024, 1024)
    assert 0 <= request.seed <= MAX_SEED
    assert (queued.position, queued.jobs_ahead, queued.eta_s, queued.created) == (1, 0, None, True)
    assert queued.job.requester == ALICE
    assert queued.job.status is JobStatus.QUEUED


async def test_imagine_keeps_what_was_asked(service: BotService) -> None:
    args = ImagineArgs("a cat", "dogs", seed=7, steps=9, width=512, height=768)
    request = (await service.imagine(ALICE, args)).job.request
    assert (request.negative_prompt, request.seed, request.steps, request.width, request.height) == (
        "dogs",
        7,
        9,
        512,
        768,
    )


async def test_imagine_checks_arguments_built_by_an_adapter(service: BotService, queue: JobQueue) -> None:
    with pytest.raises(InvalidRequest, match=r"^--steps 500 is out of range"):
        await service.imagine(ALICE, ImagineArgs("a cat", steps=500))
    with pytest.raises(InvalidRequest, match=r"^Your prompt is empty"):
        await service.imagine(ALICE, ImagineArgs("   "))
    assert await queue.active_jobs(TELEGRAM, "1") == []


async def test_positions_follow_fair_order(service: BotService) -> None:
    await service.imagine(ALICE, ImagineArgs("one"))
    await service.imagine(ALICE, ImagineArgs("two"))
    bobs = await service.imagine(BOB, ImagineArgs("three"))
    # Round-robin: alice's first, bob's first, then alice's second.
    assert (bobs.position, bobs.jobs_ahead) == (2, 1)


async def test_eta_once_timings_are_known(
    service: BotService, queue: JobQueue, image_store: ImageStore
) -> None:
    await service.imagine(ALICE, ImagineArgs("warm up", steps=10, width=512, height=512))
    await finish(queue, image_store, step_seconds=0.5)  # 10 x 0.5 s + 1 s overhead
    queued = await service.imagine(BOB, ImagineArgs("timed", steps=10, width=512, height=512))
    assert queued.eta_s == pytest.approx(6.0)


async def test_quota_lists_the_active_jobs(service: BotService, queue: JobQueue) -> None:
    ids = [(await service.imagine(ALICE, ImagineArgs(f"job {n}"))).job.id for n in range(3)]
    with pytest.raises(QuotaExceeded) as caught:
        await service.imagine(ALICE, ImagineArgs("one too many"))
    assert str(caught.value) == (
        f"You already have 3 jobs waiting or running (#{ids[0]} (queued), #{ids[1]} (queued), "
        f"#{ids[2]} (queued)); the limit is 3. Wait for one to finish, or stop one with /cancel."
    )
    # Other users and other platforms have their own quota; admins are exempt.
    await service.imagine(BOB, ImagineArgs("bob's"))
    await service.imagine(ALICE_ON_DISCORD, ImagineArgs("discord"))
    admins = await service.imagine(ALICE, ImagineArgs("admin"), is_admin=True)
    # Finished jobs free places.
    await queue.cancel(ids[0])
    await queue.cancel(admins.job.id)
    await service.imagine(ALICE, ImagineArgs("fits again"))


async def test_admins_are_held_to_the_quota_when_configured(queue: JobQueue, image_store: ImageStore) -> None:
    service = make_service(queue, image_store, max_active=1, admins_exempt=False)
    await service.imagine(ALICE, ImagineArgs("one"), is_admin=True)
    with pytest.raises(QuotaExceeded):
        await service.imagine(ALICE, ImagineArgs("two"), is_admin=True)


async def test_reroll_with_nothing_to_reroll(service: BotService) -> None:
    with pytest.raises(NothingToDo) as caught:
        await service.reroll(ALICE)
    assert str(caught.value) == (
        "Nothing to reroll here yet: draw something first, e.g. /imagine a lighthouse at dusk"
    )


async def test_reroll_last_job_with_a_new_seed(service: BotService) -> None:
    original = (await service.imagine(ALICE, ImagineArgs("a fox", "rain", seed=5, steps=7))).job
    again = (await service.reroll(ALICE)).job
    assert again.parent_id == original.id
    assert again.request.seed != original.request.seed  # one chance in 2**32 of a false failure
    same = (original.request.prompt, original.request.negative_prompt, original.request.steps)
    assert (again.request.prompt, again.request.negative_prompt, again.request.steps) == same
    assert (again.request.width, again.request.height) == (1024, 1024)
    assert again.dedupe_key is None


async def test_reroll_with_a_saved_seed(service: BotService) -> None:
    await service.imagine(ALICE, ImagineArgs("a fox", seed=5))
    assert (await service.reroll(ALICE, seed=1234)).job.request.seed == 1234
    with pytest.raises(InvalidRequest, match=r"^--seed 4294967296 is out of range"):
        await service.reroll(ALICE, seed=2**32)


async def test_reroll_uses_the_last_job_in_this_chat(service: BotService) -> None:
    await service.imagine(BOB, ImagineArgs("here"))
    await service.imagine(BOB_ELSEWHERE, ImagineArgs("elsewhere"))
    assert (await service.reroll(BOB)).job.request.prompt == "here"


async def test_reroll_of_someone_elses_job_becomes_mine(service: BotService) -> None:
    alices = (await service.imagine(ALICE, ImagineArgs("alice's fox"))).job
    mine = (await service.reroll(BOB, job_id=alices.id)).job
    assert mine.requester == BOB
    assert (mine.parent_id, mine.request.prompt) == (alices.id, "alice's fox")


async def test_reroll_of_a_job_from_another_chat_is_not_found(service: BotService) -> None:
    alices = (await service.imagine(ALICE, ImagineArgs("private"))).job
    with pytest.raises(NothingToDo) as caught:
        await service.reroll(BOB_ELSEWHERE, job_id=alices.id)
    assert str(caught.value) == f"There is no job #{alices.id} here to reroll."
    with pytest.raises(NothingToDo, match=r"^There is no job #9999 here to reroll\.$"):
        await service.reroll(BOB, job_id=9999)
    # An admin sees every job of the platform.
    assert (await service.reroll(BOB_ELSEWHERE, job_id=alices.id, is_admin=True)).job.parent_id == alices.id


async def test_button_reroll_is_deduplicated_while_active(service: BotService, queue: JobQueue) -> None:
    service_one = (await service.imagine(ALICE, ImagineArgs("a fox"))).job
    first = await service.reroll(BOB, job_id=service_one.id, from_button=True)
    assert first.created
    assert first.job.dedupe_key == f"reroll:{service_one.id}:2"
    second = await service.reroll(BOB, job_id=service_one.id, from_button=True)
    assert (second.created, second.job.id) == (False, first.job.id)
    # Another user's press is their own job.
    alices = await service.reroll(ALICE, job_id=service_one.id, from_button=True)
    assert alices.created and alices.job.id != first.job.id
    # Once the first one is over, pressing again queues a new one.
    await queue.cancel(first.job.id)
    third = await service.reroll(BOB, job_id=service_one.id, from_button=True)
    assert third.created and third.job.id != first.job.id


async def test_second_button_press_is_answered_even_at_the_quota(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(queue, image_store, max_active=1)
    source = (await service.imagine(ALICE, ImagineArgs("a fox"))).job
    first = await service.reroll(BOB, job_id=source.id, from_button=True)
    second = await service.reroll(BOB, job_id=source.id, from_button=True)
    assert (second.created, second.job.id) == (False, first.job.id)
    with pytest.raises(QuotaExceeded):
        await service.reroll(BOB, job_id=source.id)


async def test_cancel_own_newest_job(service: BotService) -> None:
    await service.imagine(ALICE, ImagineArgs("older"))
    newer = (await service.imagine(ALICE, ImagineArgs("newer"))).job
    cancelled = await service.cancel(ALICE)
    assert (cancelled.id, cancelled.status) == (newer.id, JobStatus.CANCELLED)


async def test_cancel_with_nothing_active(service: BotService) -> None:
    with pytest.raises(NothingToDo) as caught:
        await service.cancel(ALICE)
    assert str(caught.value) == "You have no queued or running job to cancel."


async def test_cancel_someone_elses_job_needs_an_admin(service: BotService) -> None:
    alices = (await service.imagine(ALICE, ImagineArgs("mine"))).job
    with pytest.raises(NotAllowed) as caught:
        await service.cancel(BOB, alices.id)
    assert str(caught.value) == f"Job #{alices.id} is not yours; only its owner or an admin can cancel it."
    assert (await service.cancel(BOB, alices.id, is_admin=True)).status is JobStatus.CANCELLED


async def test_cancel_a_finished_job(service: BotService, queue: JobQueue, image_store: ImageStore) -> None:
    await service.imagine(ALICE, ImagineArgs("quick"))
    done = await finish(queue, image_store)
    with pytest.raises(NothingToDo) as caught:
        await service.cancel(ALICE, done.id)
    assert str(caught.value) == f"Job #{done.id} has already finished; nothing to cancel."
    with pytest.raises(NothingToDo, match=r"^There is no job #4242\.$"):
        await service.cancel(ALICE, 4242)


async def test_cancel_a_running_job(service: BotService, queue: JobQueue) -> None:
    job = (await service.imagine(ALICE, ImagineArgs("long"))).job
    assert await queue.claim_next("test") is not None
    assert (await service.cancel(ALICE, job.id)).status is JobStatus.CANCELLED


async def test_owner_or_admin(service: BotService) -> None:
    alices = (await service.imagine(ALICE, ImagineArgs("mine"))).job
    assert (await service.job_for_owner_or_admin(ALICE, alices.id, is_admin=False)).id == alices.id
    assert (await service.job_for_owner_or_admin(BOB, alices.id, is_admin=True)).id == alices.id
    with pytest.raises(NotAllowed) as caught:
        await service.job_for_owner_or_admin(BOB, alices.id, is_admin=False)
    assert str(caught.value) == f"Only the person who made job #{alices.id} or an admin can do that."
    # The same user id on another platform is another person.
    with pytest.raises(NotAllowed):
        await service.job_for_owner_or_admin(ALICE_ON_DISCORD, alices.id, is_admin=True)


async def test_job_and_image_bytes(service: BotService, queue: JobQueue, image_store: ImageStore) -> None:
    queued = (await service.imagine(ALICE, ImagineArgs("picture"))).job
    with pytest.raises(NothingToDo) as caught:
        await service.image_bytes(queued)
    assert str(caught.value) == f"Job #{queued.id} has no picture: it is queued."
    done = await finish(queue, image_store)
    assert await service.image_bytes(await service.job(done.id)) == b"\x89PNG fake"
    with pytest.raises(NothingToDo, match=r"^There is no job #77\.$"):
        await service.job(77)


async def test_history_newest_first_per_platform(service: BotService) -> None:
    for prompt in ("one", "two", "three"):
        await service.imagine(ALICE, ImagineArgs(prompt))
    await service.imagine(ALICE_ON_DISCORD, ImagineArgs("discord"))
    await service.imagine(BOB, ImagineArgs("bob"))
    history = await service.history(ALICE, limit=2)
    assert [job.request.prompt for job in history] == ["three", "two"]


async def test_queue_overview(service: BotService, queue: JobQueue) -> None:
    running = (await service.imagine(ALICE, ImagineArgs("running"))).job
    assert await queue.claim_next("test") is not None
    await service.imagine(BOB, ImagineArgs("bob waits"))
    waiting = (await service.imagine(ALICE, ImagineArgs("alice waits"))).job
    overview = await service.queue_overview(ALICE)
    assert [job.id for job in overview.running] == [running.id]
    assert overview.queued_total == 2
    assert [(q.job.id, q.position, q.jobs_ahead) for q in overview.mine] == [
        (running.id, 0, 0),
        (waiting.id, 2, 1),
    ]


async def test_standing_follows_the_job(service: BotService, queue: JobQueue) -> None:
    first = (await service.imagine(ALICE, ImagineArgs("first"))).job
    second = (await service.imagine(BOB, ImagineArgs("second"))).job
    standing = await service.standing(second)
    assert (standing.position, standing.jobs_ahead, standing.created) == (2, 1, False)
    assert await queue.claim_next("test") is not None
    assert (await service.standing(second)).position == 1
    running = await service.standing(first)
    assert (running.position, running.job.status) == (0, JobStatus.RUNNING)


async def test_set_status_message(service: BotService, queue: JobQueue) -> None:
    job = (await service.imagine(ALICE, ImagineArgs("status"))).job
    await service.set_status_message(job.id, "555")
    assert (await queue.get(job.id)).status_message_id == "555"
