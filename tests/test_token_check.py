"""The HTTP pieces every platform's token check shares (`bot.token_check`), against a server on
127.0.0.1; the platforms' own checks run against their emulators in tests/test_doctor.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.token_check import NETWORK_ERRORS, ApiAnswer, ask, unreachable

TOKEN = "secret-token-123"


@pytest.fixture
async def api() -> AsyncIterator[str]:
    """A platform API: /me answers the caller's name for the right token, /page an HTML error page."""

    async def me(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return web.json_response({"message": "401: Unauthorized"}, status=401)
        return web.json_response({"username": "majicbot", "id": "7"})

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>Bad gateway</html>", status=502, content_type="text/html")

    app = web.Application()
    app.router.add_get("/me", me)
    app.router.add_post("/page", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_ask_answers_the_status_and_the_json_object(api: str) -> None:
    good = await ask("GET", f"{api}/me", headers={"Authorization": f"Bot {TOKEN}"})
    assert good == ApiAnswer(200, {"username": "majicbot", "id": "7"})
    assert (await ask("GET", f"{api}/me")).status == 401
    assert await ask("POST", f"{api}/page") == ApiAnswer(502, {})  # not JSON: the status says enough


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_api_is_described_without_the_url_or_its_token() -> None:
    base = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(NETWORK_ERRORS) as raised:
        await ask("POST", f"{base}/bot{TOKEN}/getMe")
    verdict = unreachable("Chat", base, raised.value, "chat.api_base_url")
    assert not verdict.accepted
    assert verdict.detail.startswith(f"cannot reach Chat at {base} (connection failed: ")
    assert verdict.detail.endswith("); check the network or chat.api_base_url")
    assert TOKEN not in verdict.detail and "getMe" not in verdict.detail
