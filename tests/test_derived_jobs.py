"""BotService's Vary, Upscale, several images per prompt and image prompts against a real queue (SQLite
and PostgreSQL): the jobs they queue (lineage, strength, seed, size, the input image stored with the
job), and a friendly refusal for everything not allowed."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from bot.command_parser import ImagineArgs
from bot.errors import InvalidRequest, NotAllowed, NothingToDo, QuotaExceeded
from bot.eta import StepTimes, estimate
from bot.input_images import size_for_image
from bot.service import BotService
from bot.settings import LimitsSettings, VariationsSettings
from bot.telegram import TELEGRAM
from engine.settings import EngineSettings
from storage.images import ImageStore
from storage.jobs import Job, JobOrigin, JobStatus, Requester
from storage.queue import JobQueue
from tests.support.services import build_service

pytestmark = pytest.mark.all_databases

ALICE = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="alice")
BOB = Requester(TELEGRAM, chat_id="100", user_id="2", user_name="bob")
VARIATIONS = VariationsSettings(subtle_strength=0.3, strong_strength=0.75, upscale_strength=0.25)


def make_service(queue: JobQueue, image_store: ImageStore, **limits: object) -> BotService:
    return build_service(
        queue,
        image_store,
        LimitsSettings(**limits),  # type: ignore[arg-type]
        EngineSettings(default_steps=20, default_guidance=3.5),
        variations=VARIATIONS,
    )


@pytest.fixture
def service(queue: JobQueue, image_store: ImageStore) -> BotService:
    return make_service(queue, image_store, max_active_jobs_per_user=10)


def picture(width: int, height: int, colour: tuple[int, int, int] = (200, 10, 10), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format=fmt)
    return out.getvalue()


async def finish(queue: JobQueue, image_store: ImageStore) -> Job:
    """Run the next job as the claim loop would: one stored PNG per image, each a different colour."""
    job = await queue.claim_next("test")
    assert job is not None
    stored = [
        await image_store.save(
            job.id,
            job.request.seed + i,
            picture(job.request.width, job.request.height, (10 * i, 0, 0)),
            index=i,
        )
        for i in range(job.request.count)
    ]
    return await queue.mark_done(job.id, stored[0], duration_s=5, step_seconds=0.2, more_images=stored[1:])


async def test_imagine_makes_one_job_of_n_images(service: BotService, queue: JobQueue) -> None:
    queued = await service.imagine(ALICE, ImagineArgs("a fox", seed=9, steps=4), count=4)
    job = queued.job
    assert (job.request.count, job.origin, job.request.strength) == (4, JobOrigin.NEW, None)
    assert job.progress_total == 16
    assert len(await queue.active_jobs(TELEGRAM, "1")) == 1
    default = await service.imagine(ALICE, ImagineArgs("a fox"))
    assert default.job.request.count == 1  # limits.default_images


async def test_n_is_refused_outside_one_to_max_images(queue: JobQueue, image_store: ImageStore) -> None:
    service = make_service(queue, image_store, max_images=2)
    with pytest.raises(InvalidRequest, match=r"^--n 3 is out of range: ask for 1 to 2 images"):
        await service.imagine(ALICE, ImagineArgs("a fox"), count=3)
    with pytest.raises(InvalidRequest, match=r"^--n 0 is out of range"):
        await service.imagine(ALICE, ImagineArgs("a fox"), count=0)
    assert await queue.active_jobs(TELEGRAM, "1") == []


async def test_a_job_of_four_counts_once_for_the_quota_and_four_times_for_the_eta(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(queue, image_store, max_active_jobs_per_user=2)
    await service.imagine(ALICE, ImagineArgs("timing", steps=10, width=512, height=512))
    timed = await finish(queue, image_store)  # 10 steps of 0.2 s + 3 s overhead: 5 s
    times = StepTimes.from_jobs([timed])
    four = (await service.imagine(ALICE, ImagineArgs("four", steps=10, width=512, height=512), count=4)).job
    one = (await service.imagine(ALICE, ImagineArgs("one", steps=10, width=512, height=512))).job
    with pytest.raises(QuotaExceeded):
        await service.imagine(ALICE, ImagineArgs("three"))
    now = datetime.now(UTC)
    assert times.job_seconds(one) == pytest.approx(5.0)
    assert times.job_seconds(four) == pytest.approx(20.0)
    assert estimate(one, [four], [], times, now=now) == pytest.approx(25.0)


async def test_vary_subtle_and_strong_start_from_the_chosen_image(
    service: BotService, queue: JobQueue, image_store: ImageStore
) -> None:
    await service.imagine(ALICE, ImagineArgs("a harbour", seed=100, steps=8, width=512, height=768), count=4)
    source = await finish(queue, image_store)
    subtle = (await service.vary(ALICE, source.id, 2, strong=False)).job
    strong = (await service.vary(ALICE, source.id, 1, strong=True)).job
    for job, origin, strength, index in (
        (subtle, JobOrigin.VARY_SUBTLE, 0.3, 2),
        (strong, JobOrigin.VARY_STRONG, 0.75, 1),
    ):
        assert (job.parent_id, job.origin, job.parent_image_index) == (source.id, origin, index)
        request = job.request
        assert (request.prompt, request.steps, request.width, request.height) == ("a harbour", 8, 512, 768)
        assert (request.strength, request.count) == (strength, 4)
        assert await queue.input_image(job.id) == await image_store.read(source.images[index].path)
    # A second press while it is queued returns the same job.
    again = await service.vary(ALICE, source.id, 2, strong=False)
    assert (again.job.id, again.created) == (subtle.id, False)


async def test_upscale_doubles_the_size_with_the_images_own_seed(
    service: BotService, queue: JobQueue, image_store: ImageStore
) -> None:
    await service.imagine(ALICE, ImagineArgs("a harbour", seed=100, steps=8, width=512, height=768), count=4)
    source = await finish(queue, image_store)
    job = (await service.upscale(ALICE, source.id, 3)).job
    request = job.request
    assert (request.width, request.height, request.seed, request.steps) == (1024, 1536, 103, 8)
    assert (request.strength, request.count, job.origin, job.parent_image_index) == (
        0.25,
        1,
        JobOrigin.UPSCALE,
        3,
    )
    assert await queue.input_image(job.id) == await image_store.read(source.images[3].path)


async def test_upscale_is_capped_by_the_limits_and_refused_past_them(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(queue, image_store, max_side=1536, max_pixels=1536 * 1536)
    await service.imagine(ALICE, ImagineArgs("big", width=1024, height=1024))
    source = await finish(queue, image_store)
    capped = (await service.upscale(ALICE, source.id, 0)).job.request
    assert (capped.width, capped.height) == (1536, 1536)
    await service.imagine(ALICE, ImagineArgs("largest", width=1536, height=1536))
    largest = await finish(queue, image_store)
    with pytest.raises(NothingToDo, match=r"already as large as this bot makes them.*cannot be upscaled"):
        await service.upscale(ALICE, largest.id, 0)


async def test_vary_and_upscale_refuse_what_is_not_allowed(
    service: BotService, queue: JobQueue, image_store: ImageStore
) -> None:
    await service.imagine(ALICE, ImagineArgs("mine", width=512, height=512), count=2)
    source = await finish(queue, image_store)
    with pytest.raises(NotAllowed, match=r"is not yours"):
        await service.vary(BOB, source.id, 0, strong=False)
    with pytest.raises(NotAllowed, match=r"is not yours"):
        await service.upscale(BOB, source.id, 0)
    with pytest.raises(InvalidRequest, match=r"has 2 image\(s\); pick one from 1 to 2"):
        await service.vary(ALICE, source.id, 2, strong=True)
    with pytest.raises(NothingToDo, match=r"^Job #999999 was deleted"):
        await service.vary(ALICE, 999999, 0, strong=False)
    queued = (await service.imagine(ALICE, ImagineArgs("not yet"))).job
    with pytest.raises(NothingToDo, match=r"is queued; upscale it once its picture is posted"):
        await service.upscale(ALICE, queued.id, 0)
    await queue.cancel(queued.id)
    with pytest.raises(NothingToDo, match=r"has no picture to vary"):
        await service.vary(ALICE, queued.id, 0, strong=False)
    # The picture was deleted from the server (expired).
    await queue.mark_delivered(source.id)
    await queue.forget_images([source.id])
    with pytest.raises(NothingToDo, match=r"has expired"):
        await service.vary(ALICE, source.id, 0, strong=False)
    # An admin may vary anyone's picture on the same platform.
    await service.imagine(BOB, ImagineArgs("bob's", width=512, height=512))
    bobs = await finish(queue, image_store)
    assert (await service.vary(ALICE, bobs.id, 0, strong=True, is_admin=True)).job.parent_id == bobs.id


async def test_an_image_prompt_is_stored_with_the_job_at_its_aspect_ratio(
    service: BotService, queue: JobQueue
) -> None:
    sent = picture(1600, 900, (0, 120, 0), fmt="JPEG")
    job = (await service.imagine(ALICE, ImagineArgs("a forest"), image=sent, strength=0.6)).job
    assert (job.origin, job.request.strength, job.request.count) == (JobOrigin.IMAGE_PROMPT, 0.6, 1)
    assert (job.request.width, job.request.height) == (1360, 768)
    stored = await queue.input_image(job.id)
    assert stored is not None
    with Image.open(io.BytesIO(stored)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (1600, 900), "RGB")
    # An asked size wins; no --strength takes the configured one; --n applies too.
    sized = (
        await service.imagine(ALICE, ImagineArgs("a forest", width=512, height=512), image=sent, count=2)
    ).job
    assert (sized.request.width, sized.request.height, sized.request.strength, sized.request.count) == (
        512,
        512,
        VARIATIONS.image_prompt_strength,
        2,
    )


async def test_image_prompts_are_checked_before_anything_is_queued(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(
        queue, image_store, max_input_image_bytes=50_000, max_input_image_pixels=1000 * 1000
    )
    args = ImagineArgs("a forest")
    with pytest.raises(InvalidRequest, match=r"^That file is not an image I can read; send a PNG, JPEG"):
        await service.imagine(ALICE, args, image=b"GIF89a not really" + bytes(100))
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(InvalidRequest, match=r"^That file is GIF; send a PNG, JPEG or WebP image"):
        await service.imagine(ALICE, args, image=gif.getvalue())
    with pytest.raises(InvalidRequest, match=r"^That image is 59 KiB; the limit is 49 KiB"):
        await service.imagine(ALICE, args, image=bytes(60_000))
    with pytest.raises(InvalidRequest, match=r"^That image is 1200x900 \(1,080,000 pixels\); the limit is"):
        await service.imagine(ALICE, args, image=picture(1200, 900))
    with pytest.raises(InvalidRequest, match=r"damaged or cut short"):
        await service.imagine(ALICE, args, image=picture(64, 64)[:-40])
    with pytest.raises(InvalidRequest, match=r"^--strength 1.5 is out of range: use a number from 0.1"):
        await service.imagine(ALICE, args, image=picture(64, 64), strength=1.5)
    with pytest.raises(InvalidRequest, match=r"^--strength 0.05 is out of range"):
        await service.imagine(ALICE, args, image=picture(64, 64), strength=0.05)
    with pytest.raises(InvalidRequest, match=r"^--strength goes with an image"):
        await service.imagine(ALICE, args, strength=0.5)
    assert await queue.active_jobs(TELEGRAM, "1") == []


async def test_a_reroll_is_recorded_as_one_and_keeps_the_count(
    service: BotService, queue: JobQueue, image_store: ImageStore
) -> None:
    await service.imagine(ALICE, ImagineArgs("again"), count=3)
    source = await finish(queue, image_store)
    job = (await service.reroll(ALICE, job_id=source.id)).job
    assert (job.origin, job.parent_id, job.request.count) == (JobOrigin.REROLL, source.id, 3)
    assert source.status is JobStatus.DONE
    assert await service.image_bytes(source, 2) == await image_store.read(source.images[2].path)
    with pytest.raises(NothingToDo, match=r"has 3 image\(s\); there is no image 4"):
        await service.image_bytes(source, 3)


@pytest.mark.parametrize(
    ("sent", "limits", "drawn"),
    [
        ((1600, 900), LimitsSettings(), (1360, 768)),
        ((900, 1600), LimitsSettings(), (768, 1360)),
        ((3000, 3000), LimitsSettings(), (1024, 1024)),
        ((100, 100), LimitsSettings(), (1024, 1024)),
        ((8000, 100), LimitsSettings(), (2048, 256)),  # clamped to the side limits
        ((300, 150), LimitsSettings(min_side=64, max_side=256, max_pixels=65536), (256, 128)),
    ],
)
def test_an_image_prompt_is_drawn_at_its_aspect_ratio_within_the_limits(
    sent: tuple[int, int], limits: LimitsSettings, drawn: tuple[int, int]
) -> None:
    width, height = size_for_image(*sent, limits)
    assert (width, height) == drawn
    assert width % 16 == height % 16 == 0 and width * height <= limits.max_pixels


async def test_a_reroll_of_a_job_from_an_image_starts_from_the_same_image(
    service: BotService, queue: JobQueue, image_store: ImageStore
) -> None:
    await service.imagine(ALICE, ImagineArgs("mine", width=512, height=512), count=2)
    source = await finish(queue, image_store)
    strong = await service.vary(ALICE, source.id, 1, strong=True)
    varied = await finish(queue, image_store)
    assert varied.id == strong.job.id
    again = (await service.reroll(ALICE, job_id=varied.id)).job
    assert (again.origin, again.parent_id, again.request.strength, again.request.count) == (
        JobOrigin.REROLL,
        varied.id,
        0.75,
        2,
    )
    assert await queue.input_image(again.id) == await queue.input_image(varied.id) is not None
