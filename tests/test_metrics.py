"""bot.metrics and bot.metrics_server: the Prometheus endpoint and /healthz over a real socket, and the
whole application reporting a real job (tiny CPU backend, real worker process, SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from bot.app import Application
from bot.command_parser import ImagineArgs
from bot.metrics import Health, MetricsSettings, PrometheusMetrics
from bot.metrics_server import MetricsServer
from bot.settings import LimitsSettings
from bot.telegram import TELEGRAM
from engine.messages import JobSucceeded, MemoryReport, RawImage
from storage.jobs import JobStatus, Requester
from tests.support.app_harness import tiny_app_config
from tests.support.memory_frontend import MemoryFrontend

START_S = 90.0  # the worker imports torch on a shared 2-core machine
ALICE = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="alice")


def _succeeded(seconds: float, step_seconds: float) -> JobSucceeded:
    return JobSucceeded(
        job_id=1,
        images=(RawImage("RGB", 1, 1, b"\0\0\0"),),
        model="m",
        strategy="s",
        seconds=seconds,
        step_seconds=step_seconds,
        memory=MemoryReport(
            allocated=3 * 2**30, reserved=4 * 2**30, peak_reserved=0, free_on_device=0, total_on_device=0
        ),
        generate_started=0.0,
        generate_finished=seconds,
    )


def _value(text: str, sample: str) -> float:
    """The value of the sample line that starts with `sample` (name and labels)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {sample} in:\n{text}")


@pytest.fixture
async def served() -> AsyncIterator[tuple[PrometheusMetrics, MetricsServer, dict[str, bool]]]:
    metrics = PrometheusMetrics()
    state = {"engine": True, "telegram": True}
    metrics.watch(
        health=lambda: Health(state["engine"], {"telegram": state["telegram"]}), worker_restarts=lambda: 2
    )
    server = MetricsServer(metrics, "127.0.0.1", 0)
    await server.start()
    try:
        yield metrics, server, state
    finally:
        await server.stop()


async def _get(port: int | None, path: str) -> tuple[int, str]:
    async with (
        asyncio.timeout(10),
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll `condition` until it holds (bounded by the caller's timeout)."""
    while True:
        if await condition():
            return
        await asyncio.sleep(0.05)


async def test_every_metric_over_a_socket(
    served: tuple[PrometheusMetrics, MetricsServer, dict[str, bool]],
) -> None:
    metrics, server, _ = served
    metrics.set_queue_depth(4)
    metrics.job_started(2.5)
    metrics.job_ran(_succeeded(seconds=4.2, step_seconds=0.21))
    metrics.job_outcome("done")
    metrics.job_outcome("failed")
    metrics.delivery_failed("telegram", gave_up=False)
    metrics.delivery_failed("telegram", gave_up=True)
    status, text = await _get(server.port, "/metrics")
    assert status == 200
    assert _value(text, "majicbot_queue_depth") == 4
    assert _value(text, 'majicbot_jobs_total{outcome="done"}') == 1
    assert _value(text, 'majicbot_jobs_total{outcome="failed"}') == 1
    assert _value(text, "majicbot_job_wait_seconds_count") == 1
    assert _value(text, "majicbot_job_wait_seconds_sum") == 2.5
    assert _value(text, 'majicbot_job_run_seconds_bucket{le="5.0"}') == 1
    assert _value(text, "majicbot_step_seconds_sum") == pytest.approx(0.21)
    assert _value(text, 'majicbot_gpu_memory_bytes{kind="reserved"}') == 4 * 2**30
    assert _value(text, 'majicbot_delivery_failures_total{platform="telegram"}') == 2
    assert _value(text, 'majicbot_delivery_retries_total{platform="telegram"}') == 1
    assert _value(text, 'majicbot_delivery_given_up_total{platform="telegram"}') == 1
    assert _value(text, "majicbot_worker_restarts_total") == 2
    assert _value(text, "majicbot_engine_up") == 1
    assert _value(text, 'majicbot_adapter_up{adapter="telegram"}') == 1


async def test_healthz_says_what_is_down(
    served: tuple[PrometheusMetrics, MetricsServer, dict[str, bool]],
) -> None:
    _, server, state = served
    status, body = await _get(server.port, "/healthz")
    assert status == 200
    assert body == '{"healthy": true, "engine": "up", "adapters": {"telegram": "up"}}'
    state["telegram"] = False
    status, body = await _get(server.port, "/healthz")
    assert status == 503
    assert '"adapters": {"telegram": "down"}' in body
    state["telegram"], state["engine"] = True, False
    status, body = await _get(server.port, "/healthz")
    assert status == 503 and '"engine": "down"' in body


async def test_a_port_in_use_is_a_clear_error() -> None:
    first = MetricsServer(PrometheusMetrics(), "127.0.0.1", 0)
    await first.start()
    try:
        second = MetricsServer(PrometheusMetrics(), "127.0.0.1", first.port or 0)
        with pytest.raises(OSError, match=r"change metrics\.port"):
            await second.start()
    finally:
        await first.stop()


async def test_the_application_reports_a_real_job(tmp_path: Path) -> None:
    config = tiny_app_config(tmp_path, limits=LimitsSettings()).model_copy(
        update={"metrics": MetricsSettings(enabled=True, port=0, queue_sample_interval_s=0.1)}
    )
    frontend = MemoryFrontend()
    app = Application(config, frontends=lambda service: [frontend], shutdown_timeout_s=10)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        async with asyncio.timeout(START_S):
            await app.started()
            queued = await app.service.imagine(
                ALICE, ImagineArgs("a lighthouse", steps=2, width=256, height=256)
            )

            async def done() -> bool:
                return (await app.queue.get(queued.job.id)).status is JobStatus.DONE

            async def engine_up() -> bool:
                return bool(app.health().engine_up)

            async def counted() -> bool:  # recorded just after the row changes
                text = (await _get(app.metrics_port, "/metrics"))[1]
                return 'majicbot_jobs_total{outcome="done"} 1.0' in text

            await _until(done)
            await _until(engine_up)
            await _until(counted)
            status, text = await _get(app.metrics_port, "/metrics")
        assert status == 200
        assert _value(text, "majicbot_job_run_seconds_count") == 1
        assert _value(text, "majicbot_step_seconds_count") == 1
        assert _value(text, "majicbot_job_wait_seconds_count") == 1
        assert _value(text, 'majicbot_gpu_memory_bytes{kind="reserved"}') > 0  # the tiny backend's fake
        assert _value(text, "majicbot_engine_up") == 1
        assert _value(text, 'majicbot_adapter_up{adapter="memory-telegram"}') == 1
        assert _value(text, "majicbot_worker_restarts_total") == 0
        health_status, body = await _get(app.metrics_port, "/healthz")
        assert health_status == 200 and '"memory-telegram": "up"' in body

        # A worker that dies under a job is counted, and so is the job going back to the queue.
        async with asyncio.timeout(START_S):
            await app.service.imagine(
                ALICE, ImagineArgs("a [crash] lighthouse", steps=2, width=256, height=256)
            )

            async def restarted() -> bool:
                text = (await _get(app.metrics_port, "/metrics"))[1]
                return "majicbot_worker_restarts_total 1.0" in text and 'outcome="queued"' in text

            await _until(restarted)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task
