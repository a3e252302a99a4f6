"""The metrics endpoint: `GET /metrics` (Prometheus text format) and `GET /healthz` (JSON).

/healthz answers 200 when the engine (if this process runs one) and every chat adapter are up, 503
otherwise, with the details: `{"healthy": true, "engine": "up", "adapters": {"telegram": "up"}}`.
Runs on the application's event loop (aiohttp); rendering the registry takes microseconds.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.metrics import PrometheusMetrics

logger = logging.getLogger(__name__)


class MetricsServer:
    def __init__(self, metrics: PrometheusMetrics, listen: str, port: int) -> None:
        self._metrics = metrics
        self._listen = listen
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The port actually bound (the configured one, or the one picked for port 0)."""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self._listen, self._port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OSError(
                error.errno,
                f"cannot listen on {self._listen}:{self._port} for metrics ({error.strerror}); "
                "change metrics.port or metrics.listen",
            ) from None
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        logger.info("metrics on http://%s:%s/metrics and /healthz", self._listen, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def _serve_health(self, request: web.Request) -> web.Response:
        health = self._metrics.health()
        body = {
            "healthy": health.healthy,
            "engine": None if health.engine_up is None else ("up" if health.engine_up else "down"),
            "adapters": {name: "up" if up else "down" for name, up in health.adapters.items()},
        }
        return web.json_response(body, status=200 if health.healthy else 503)
