"""Prometheus metrics for an operator (optional: `pip install 'majicbot[metrics]'`, `[metrics]` section).

    majicbot_queue_depth                         gauge      queued jobs (sampled every few seconds)
    majicbot_jobs_total{outcome}                 counter    done, failed, cancelled, queued (given back)
    majicbot_job_wait_seconds                    histogram  queued -> claimed
    majicbot_job_run_seconds                     histogram  the worker's time for one image
    majicbot_step_seconds                        histogram  mean seconds per denoising step of a job
    majicbot_gpu_memory_bytes{kind}              gauge      allocated / reserved after the last job
    majicbot_delivery_failures_total{platform}   counter    posts that failed (each retry counts)
    majicbot_delivery_retries_total{platform}    counter    failed posts that will be tried again
    majicbot_delivery_given_up_total{platform}   counter    jobs given up on after the last attempt
    majicbot_worker_restarts_total               counter    GPU worker processes restarted after dying
    majicbot_engine_up, majicbot_adapter_up{adapter}  gauges  what /healthz reports

The engine reports through `engine.metrics.EngineMetrics`, delivery through `DeliveryMetrics`; both are
plain method calls on this object, which the application injects (neither imports prometheus_client).
`/metrics` and `/healthz` are served by `bot.metrics_server`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from engine.messages import JobSucceeded

METRICS_INSTALL = "pip install 'majicbot[metrics]'"

_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
_STEP_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10)


class MetricsSettings(BaseModel):
    """The `[metrics]` section: an HTTP endpoint with /metrics and /healthz, off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    listen: str = Field(default="127.0.0.1", description="Address to listen on; 0.0.0.0 for all.")
    port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port (tests).")
    queue_sample_interval_s: float = Field(default=5.0, gt=0, le=300)


class MetricsUnavailable(Exception):
    """Metrics are enabled but prometheus-client is not installed."""


class DeliveryMetrics(Protocol):
    def delivery_failed(self, platform: str, *, gave_up: bool) -> None:
        """A post to `platform` failed; `gave_up` when no further attempt will be made."""


class _NoDeliveryMetrics:
    def delivery_failed(self, platform: str, *, gave_up: bool) -> None:
        pass


NO_DELIVERY_METRICS: DeliveryMetrics = _NoDeliveryMetrics()


@dataclass(frozen=True, slots=True)
class Health:
    """What /healthz says: the engine (None where this process runs none) and each adapter."""

    engine_up: bool | None
    adapters: Mapping[str, bool]

    @property
    def healthy(self) -> bool:
        return self.engine_up is not False and all(self.adapters.values())


HealthSource = Callable[[], Health]


class PrometheusMetrics:
    """Every majicbot metric in a registry of its own (so tests can make several)."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prometheus
        except ImportError:
            raise MetricsUnavailable(
                f"metrics.enabled is true but prometheus-client is not installed: run {METRICS_INSTALL}, "
                "or set metrics.enabled = false."
            ) from None
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.queue_depth = prometheus.Gauge("majicbot_queue_depth", "Queued jobs.", registry=registry)
        self.jobs = prometheus.Counter(
            "majicbot_jobs", "Jobs that left the engine, by outcome.", ["outcome"], registry=registry
        )
        self.wait_seconds = prometheus.Histogram(
            "majicbot_job_wait_seconds",
            "Time from queued to claimed.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.run_seconds = prometheus.Histogram(
            "majicbot_job_run_seconds",
            "Worker time for one image.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.step_seconds = prometheus.Histogram(
            "majicbot_step_seconds",
            "Mean seconds per denoising step.",
            buckets=_STEP_BUCKETS,
            registry=registry,
        )
        self.gpu_memory = prometheus.Gauge(
            "majicbot_gpu_memory_bytes", "GPU memory after the last job.", ["kind"], registry=registry
        )
        self.delivery_failures = prometheus.Counter(
            "majicbot_delivery_failures", "Failed posts to a platform.", ["platform"], registry=registry
        )
        self.delivery_retries = prometheus.Counter(
            "majicbot_delivery_retries",
            "Failed posts that will be tried again.",
            ["platform"],
            registry=registry,
        )
        self.delivery_given_up = prometheus.Counter(
            "majicbot_delivery_given_up",
            "Jobs given up on after the last attempt.",
            ["platform"],
            registry=registry,
        )
        self._restarts: Callable[[], int] = lambda: 0
        self._health: HealthSource = lambda: Health(None, {})
        registry.register(_PullCollector(self))

    # -- sources read at scrape time ---------------------------------------------------------------
    def watch(self, *, health: HealthSource, worker_restarts: Callable[[], int] | None = None) -> None:
        self._health = health
        if worker_restarts is not None:
            self._restarts = worker_restarts

    def health(self) -> Health:
        return self._health()

    # -- engine.metrics.EngineMetrics --------------------------------------------------------------
    def job_started(self, wait_s: float) -> None:
        self.wait_seconds.observe(wait_s)

    def job_ran(self, result: JobSucceeded) -> None:
        self.run_seconds.observe(result.seconds)
        self.step_seconds.observe(result.step_seconds)
        self.gpu_memory.labels("allocated").set(result.memory.allocated)
        self.gpu_memory.labels("reserved").set(result.memory.reserved)

    def job_outcome(self, outcome: str) -> None:
        self.jobs.labels(outcome).inc()

    # -- DeliveryMetrics ---------------------------------------------------------------------------
    def delivery_failed(self, platform: str, *, gave_up: bool) -> None:
        self.delivery_failures.labels(platform).inc()
        (self.delivery_given_up if gave_up else self.delivery_retries).labels(platform).inc()

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST


class _PullCollector:
    """Values read from the application when Prometheus scrapes."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Any]:
        return ()

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        restarts = CounterMetricFamily("majicbot_worker_restarts", "GPU workers restarted after dying.")
        restarts.add_metric([], self._metrics._restarts())
        yield restarts
        health = self._metrics.health()
        if health.engine_up is not None:
            yield GaugeMetricFamily(
                "majicbot_engine_up",
                "1 when the GPU worker is loaded and alive.",
                value=int(health.engine_up),
            )
        adapters = GaugeMetricFamily(
            "majicbot_adapter_up", "1 when the chat adapter is running.", labels=["adapter"]
        )
        for name, up in health.adapters.items():
            adapters.add_metric([name], int(up))
        yield adapters
