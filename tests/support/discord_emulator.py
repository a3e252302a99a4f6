"""A small Discord: the REST API and gateway websocket that discord.py talks to, on 127.0.0.1.

The tests run the real discord.py client against it. It answers the startup traffic (who am I, the
application, command sync), runs the gateway handshake (HELLO, IDENTIFY, READY, heartbeats), lets a
test inject slash commands and button clicks as INTERACTION_CREATE events, and records every REST
call with its arrival time so a test can wait for the call it expects. Behaviour worth imitating
faithfully (it breaks real clients when wrong):

- JSON replies carry ``Content-Type: application/json`` exactly, or discord.py reads them as text.
- An interaction callback answers ``{"interaction": {...}}``; a 204 breaks the client.
- A 429 is retried by discord.py only when it carries a ``Via`` header and a JSON body.
- Interactions may be answered once (40060 otherwise).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

JsonObject = dict[str, Any]

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
INTERACTION_ALREADY_ACKNOWLEDGED = 40060
UNKNOWN_INTERACTION = 10062


@dataclass(frozen=True, slots=True)
class UploadedFile:
    field_name: str
    filename: str
    content_type: str
    data: bytes


PAYLOAD = web.RequestKey("payload", object)
FILES: web.RequestKey[tuple[UploadedFile, ...]] = web.RequestKey("files", tuple)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One REST request as it arrived."""

    method: str
    route: str  # the route template, e.g. "POST /channels/{channel}/messages"
    path: str
    params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    payload: JsonObject | list[Any] | None  # the JSON body, or multipart's payload_json
    files: tuple[UploadedFile, ...]
    arrived: float  # time.monotonic()
    status: int
    answer: Any  # the JSON the emulator answered with (None for an empty answer)


@dataclass(frozen=True, slots=True)
class Injected:
    """An interaction sent to the client over the gateway."""

    id: str
    token: str
    sent: float  # time.monotonic()
    payload: JsonObject


@dataclass(slots=True)
class _RateLimit:
    route: str
    remaining: int
    retry_after: float


@dataclass(slots=True)
class _Interaction:
    payload: JsonObject
    acknowledged: bool = False
    original: JsonObject | None = None


@dataclass(slots=True)
class _Gateway:
    socket: web.WebSocketResponse
    sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class DiscordEmulator:
    """Start with `await start()`; point discord.py at `api_base_url` and `gateway_url`."""

    def __init__(
        self,
        *,
        token: str = "emulated-bot-token",
        application_id: int = 900_000_000_000_000_001,
        bot_user_id: int = 900_000_000_000_000_002,
        heartbeat_interval_ms: int = 5000,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.calls: list[RecordedCall] = []
        self.injected: list[Injected] = []
        self.messages: dict[str, JsonObject] = {}  # channel messages by id
        self.commands: dict[str, list[JsonObject]] = {}  # "global" or a guild id -> synced commands
        self.identify_count = 0
        self.upload_limits: dict[str, int] = {}  # channel id -> bytes per file
        self.user_attachments: dict[str, bytes] = {}  # files users attached to commands, by id
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self._interactions: dict[str, _Interaction] = {}
        self._rate_limits: list[_RateLimit] = []
        self._gateway: _Gateway | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/gateway", self._gateway_socket)
        app.router.add_get("/user-attachments/{attachment}/{filename}", self._get_user_attachment)
        api = "/api/v10"
        routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway),
            ("PUT", "/applications/{app}/commands", self._put_commands),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands),
            ("POST", "/interactions/{interaction}/{token}/callback", self._callback),
            ("GET", "/webhooks/{app}/{token}/messages/{message}", self._get_webhook_message),
            ("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._edit_webhook_message),
            ("DELETE", "/webhooks/{app}/{token}/messages/{message}", self._delete_webhook_message),
            ("POST", "/webhooks/{app}/{token}", self._followup),
            ("POST", "/channels/{channel}/messages", self._create_message),
            ("PATCH", "/channels/{channel}/messages/{message}", self._edit_message),
            ("DELETE", "/channels/{channel}/messages/{message}", self._delete_message),
            ("POST", "/users/@me/channels", self._create_dm),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        app.router.add_route("*", api + "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._gateway is not None and not self._gateway.socket.closed:
            await self._gateway.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- test controls ------------------------------------------------------------------------
    def rate_limit_next(self, route: str, count: int = 1, *, retry_after: float = 0.3) -> None:
        """Answer the next `count` calls of `route` (e.g. "POST /channels/{channel}/messages") with 429."""
        self._rate_limits.append(_RateLimit(route, count, retry_after))

    async def revoke_token(self) -> None:
        """The bot token was reset: REST answers 401 and the gateway session ends with 4004."""
        self.token = "revoked." + self.token
        if self._gateway is not None and not self._gateway.socket.closed:
            await self._gateway.socket.close(code=4004, message=b"Authentication failed.")

    async def wait_connected(self, within: float = 10.0) -> None:
        """Until a client has identified and received READY."""
        await self._wait_until(lambda: self._gateway is not None and self._gateway.ready.is_set(), within)

    async def wait_for_call(
        self, predicate: Callable[[RecordedCall], bool], within: float = 10.0, *, after: float = 0.0
    ) -> RecordedCall:
        """The first call (arrived at or after `after`) matching `predicate`, waiting up to `within` s."""

        def find() -> RecordedCall | None:
            return next((c for c in self.calls if c.arrived >= after and predicate(c)), None)

        found = await self._wait_until(find, within)
        assert isinstance(found, RecordedCall)
        return found

    async def wait_for_calls(
        self, predicate: Callable[[RecordedCall], bool], count: int, within: float = 10.0
    ) -> list[RecordedCall]:
        """At least `count` recorded calls matching `predicate`, in arrival order."""

        def find() -> list[RecordedCall] | None:
            found = [c for c in self.calls if predicate(c)]
            return found if len(found) >= count else None

        result = await self._wait_until(find, within)
        assert isinstance(result, list)
        return result

    def calls_matching(self, predicate: Callable[[RecordedCall], bool]) -> list[RecordedCall]:
        return [c for c in self.calls if predicate(c)]

    async def inject_slash(
        self,
        name: str,
        options: Mapping[str, str | int | float | bool] | None = None,
        *,
        attachments: Mapping[str, tuple[str, bytes]] | None = None,
        user_id: int,
        user_name: str = "someone",
        channel_id: int = 1_000,
        guild_id: int | None = 500,
        role_ids: Sequence[int] = (),
        upload_limit: int | None = None,
    ) -> Injected:
        """A user runs `/name` with `options`; guild_id None means a DM.

        upload_limit: the channel's attachment size limit (default 10 MiB); posts over it get a 413.
        attachments: attachment options, option name -> (file name, bytes), served for download.
        """
        if upload_limit is not None:
            self.upload_limits[str(channel_id)] = upload_limit
        # A guild's own copy of the command wins over the global one, as in Discord's client.
        scopes = ([str(guild_id)] if guild_id is not None else []) + ["global"]
        command = next(
            (c for scope in scopes for c in self.commands.get(scope, []) if c["name"] == name),
            {"id": str(next(self._ids))},
        )
        data: JsonObject = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": [
                {"name": key, "type": _option_type(value), "value": value}
                for key, value in (options or {}).items()
            ],
        }
        resolved: dict[str, JsonObject] = {}
        for option, (filename, content) in (attachments or {}).items():
            attachment_id = str(next(self._ids))
            self.user_attachments[attachment_id] = content
            url = f"http://127.0.0.1:{self.port}/user-attachments/{attachment_id}/{filename}"
            resolved[attachment_id] = {
                "id": attachment_id,
                "filename": filename,
                "size": len(content),
                "url": url,
                "proxy_url": url,
                "content_type": "image/png",
            }
            data["options"].append({"name": option, "type": 11, "value": attachment_id})
        if resolved:
            data["resolved"] = {"attachments": resolved}
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._inject(
            2,
            data,
            user_id=user_id,
            user_name=user_name,
            channel_id=channel_id,
            guild_id=guild_id,
            role_ids=role_ids,
        )

    async def inject_click(
        self,
        message_id: str,
        custom_id: str,
        *,
        user_id: int,
        user_name: str = "someone",
        guild_id: int | None = 500,
        role_ids: Sequence[int] = (),
    ) -> Injected:
        """A user clicks the button `custom_id` on the stored channel message `message_id`."""
        message, _ = self._component(message_id, custom_id, 2)
        data: JsonObject = {"custom_id": custom_id, "component_type": 2}
        return await self._inject_on(message, data, user_id, user_name, guild_id, role_ids)

    async def inject_select(
        self,
        message_id: str,
        custom_id: str,
        values: Sequence[str],
        *,
        user_id: int,
        user_name: str = "someone",
        guild_id: int | None = 500,
        role_ids: Sequence[int] = (),
    ) -> Injected:
        """A user picks `values` in the select menu `custom_id` on the stored message `message_id`."""
        message, select = self._component(message_id, custom_id, 3)
        offered = {option["value"] for option in select.get("options", [])}
        assert set(values) <= offered, f"{values} are not among the select's options {sorted(offered)}"
        data: JsonObject = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        return await self._inject_on(message, data, user_id, user_name, guild_id, role_ids)

    def _component(self, message_id: str, custom_id: str, kind: int) -> tuple[JsonObject, JsonObject]:
        """The stored message and its component `custom_id` of type `kind` (2 button, 3 select)."""
        message = self.messages[message_id]
        items = [c for row in message.get("components", []) for c in row.get("components", [])]
        found = next((c for c in items if c.get("custom_id") == custom_id and c.get("type") == kind), None)
        assert found is not None, f"{custom_id} is not on the message"
        return message, found

    async def _inject_on(
        self,
        message: JsonObject,
        data: JsonObject,
        user_id: int,
        user_name: str,
        guild_id: int | None,
        role_ids: Sequence[int],
    ) -> Injected:
        """A component interaction (type 3) on `message`, in its channel."""
        return await self._inject(
            3,
            data,
            user_id=user_id,
            user_name=user_name,
            channel_id=int(message["channel_id"]),
            guild_id=guild_id,
            role_ids=role_ids,
            message=message,
        )

    def original_response(self, interaction: Injected) -> JsonObject | None:
        """The interaction's response message as last edited, if any."""
        return self._interactions[interaction.token].original

    # -- gateway ------------------------------------------------------------------------------
    async def _gateway_socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        gateway = _Gateway(socket)
        self._gateway = gateway
        await socket.send_json({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        async for frame in socket:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            op = message["op"]
            if op == 1:
                await socket.send_json({"op": 11})
            elif op == 2:
                if message["d"]["token"] != self.token:
                    await socket.close(code=4004, message=b"Authentication failed.")
                    break
                self.identify_count += 1
                await self._send_ready(gateway)
            elif op == 6:  # RESUME: sessions are not kept, so ask for a fresh IDENTIFY
                await socket.send_json({"op": 9, "d": False})
        return socket

    async def _send_ready(self, gateway: _Gateway) -> None:
        ready = {
            "v": 10,
            "user": self._bot_user(),
            "guilds": [],
            "session_id": f"session-{next(self._ids)}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await gateway.socket.send_json({"op": 0, "t": "READY", "s": next(gateway.sequence), "d": ready})
        gateway.ready.set()
        await self._notify()

    async def _inject(
        self,
        kind: int,
        data: JsonObject,
        *,
        user_id: int,
        user_name: str,
        channel_id: int,
        guild_id: int | None,
        role_ids: Sequence[int],
        message: JsonObject | None = None,
    ) -> Injected:
        gateway = self._gateway
        assert gateway is not None and gateway.ready.is_set(), "no client is connected"
        interaction_id = str(next(self._ids))
        token = f"interaction-token-{interaction_id}"
        user = {
            "id": str(user_id),
            "username": user_name,
            "global_name": user_name,
            "discriminator": "0",
            "avatar": None,
        }
        payload: JsonObject = {
            "id": interaction_id,
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "attachment_size_limit": self.upload_limits.get(str(channel_id), DEFAULT_UPLOAD_LIMIT),
            "channel_id": str(channel_id),
            "locale": "en-US",
            "app_permissions": "2248473465835073",
            "entitlements": [],
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["channel"] = {
                "id": str(channel_id),
                "type": 0,
                "guild_id": str(guild_id),
                "name": "art",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "flags": 0,
            }
            payload["member"] = {
                "user": user,
                "roles": [str(r) for r in role_ids],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "2248473465835073",
            }
        else:
            payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user]}
            payload["user"] = user
        if message is not None:
            payload["message"] = message
        self._interactions[token] = _Interaction(payload)
        sent = time.monotonic()
        await gateway.socket.send_json(
            {"op": 0, "t": "INTERACTION_CREATE", "s": next(gateway.sequence), "d": payload}
        )
        injected = Injected(interaction_id, token, sent, payload)
        self.injected.append(injected)
        return injected

    # -- REST ---------------------------------------------------------------------------------
    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        info = request.match_info.route.resource
        template = info.canonical if info is not None else request.path
        route = f"{request.method} {template.removeprefix('/api/v10')}"
        payload, files = await _read_body(request)
        request[PAYLOAD] = payload
        request[FILES] = files
        response: web.StreamResponse
        limited = next((r for r in self._rate_limits if r.route == route and r.remaining > 0), None)
        if template.startswith("/api/") and _token_of(request) not in (None, self.token):
            response = _json({"message": "401: Unauthorized", "code": 0}, status=401)
        elif limited is not None:
            limited.remaining -= 1
            response = _json(
                {
                    "message": "You are being rate limited.",
                    "retry_after": limited.retry_after,
                    "global": False,
                },
                status=429,
                headers={"Via": "1.1 google", "Retry-After": str(limited.retry_after)},
            )
        else:
            response = await handler(request)
        if template != "/gateway":
            self.calls.append(
                RecordedCall(
                    method=request.method,
                    route=route,
                    path=request.path,
                    params=dict(request.match_info),
                    query=dict(request.query),
                    headers=dict(request.headers),
                    payload=payload,
                    files=files,
                    arrived=arrived,
                    status=response.status,
                    answer=_answer_of(response),
                )
            )
            await self._notify()
        return response

    async def _get_user_attachment(self, request: web.Request) -> web.Response:
        content = self.user_attachments.get(request.match_info["attachment"])
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content, content_type="image/png")

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json(self._bot_user())

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.application_id),
                "name": "majicbot",
                "icon": None,
                "description": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "terms_of_service_url": None,
                "privacy_policy_url": None,
                "owner": {"id": "1", "username": "owner", "discriminator": "0", "avatar": None},
                "verify_key": "0" * 64,
                "team": None,
                "flags": 0,
                "bot": self._bot_user(),
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url, "shards": 1})

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = request.match_info.get("guild", "global")
        body = request[PAYLOAD]
        assert isinstance(body, list)
        synced = []
        for command in body:
            synced.append(
                {
                    "id": str(next(self._ids)),
                    "application_id": str(self.application_id),
                    "version": str(next(self._ids)),
                    "default_member_permissions": None,
                    "dm_permission": True,
                    "nsfw": False,
                    "type": 1,
                    "options": [],
                    **command,
                    **({"guild_id": scope} if scope != "global" else {}),
                }
            )
        self.commands[scope] = synced
        return _json(synced)

    async def _callback(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if state is None or state.payload["id"] != request.match_info["interaction"]:
            return _json({"message": "Unknown interaction", "code": UNKNOWN_INTERACTION}, status=404)
        if state.acknowledged:
            return _json(
                {
                    "message": "Interaction has already been acknowledged.",
                    "code": INTERACTION_ALREADY_ACKNOWLEDGED,
                },
                status=400,
            )
        state.acknowledged = True
        body = request[PAYLOAD]
        assert isinstance(body, dict)
        kind = body["type"]
        answer: JsonObject = {
            "interaction": {
                "id": state.payload["id"],
                "type": state.payload["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(body.get("data", {}).get("flags", 0) & 64),
            }
        }
        if kind in (4, 5):  # a message (or the "thinking" placeholder of one) now exists
            data = body.get("data", {})
            original = self._message(state.payload["channel_id"], data, request[FILES])
            state.original = original
            answer["interaction"]["response_message_id"] = original["id"]
            answer["resource"] = {"type": kind, "message": original}
        return _json(answer)

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if state is None or state.original is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return _json(state.original)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if state is None or not state.acknowledged:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        body = request[PAYLOAD]
        assert isinstance(body, dict)
        base = state.original or self._message(state.payload["channel_id"], {}, ())
        update = self._message(state.payload["channel_id"], body, request[FILES])
        # An edit changes only what it names, as on Discord.
        edited = {**base, **{key: update[key] for key in ("content", "embeds", "components") if key in body}}
        if request[FILES] or "attachments" in body:
            edited["attachments"] = update["attachments"]
        state.original = edited
        return _json(edited)

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if state is None or state.original is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        state.original = None
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if state is None or not state.acknowledged:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        body = request[PAYLOAD]
        assert isinstance(body, dict)
        return _json(self._message(state.payload["channel_id"], body, request[FILES]))

    async def _create_message(self, request: web.Request) -> web.Response:
        body = request[PAYLOAD]
        assert isinstance(body, dict)
        limit = self.upload_limits.get(request.match_info["channel"], DEFAULT_UPLOAD_LIMIT)
        if any(len(f.data) > limit for f in request[FILES]):
            return _json({"message": "Request entity too large", "code": 40005}, status=413)
        message = self._message(request.match_info["channel"], body, request[FILES])
        self.messages[message["id"]] = message
        return _json(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["message"])
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        body = request[PAYLOAD]
        assert isinstance(body, dict)
        message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
        return _json(message)

    async def _delete_message(self, request: web.Request) -> web.Response:
        if self.messages.pop(request.match_info["message"], None) is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return web.Response(status=204)

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = request[PAYLOAD]
        assert isinstance(body, dict)
        recipient = {
            "id": str(body["recipient_id"]),
            "username": "someone",
            "discriminator": "0",
            "avatar": None,
        }
        return _json(
            {"id": str(next(self._ids)), "type": 1, "recipients": [recipient], "last_message_id": None}
        )

    async def _unknown(self, request: web.Request) -> web.Response:
        return _json(
            {"message": "404: Not Found (the emulator does not know this route)", "code": 0}, status=404
        )

    # -- helpers ------------------------------------------------------------------------------
    def _bot_user(self) -> JsonObject:
        return {
            "id": str(self.bot_user_id),
            "username": "majicbot",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "flags": 0,
            "mfa_enabled": False,
            "verified": True,
        }

    def _message(self, channel_id: str, body: JsonObject, files: tuple[UploadedFile, ...]) -> JsonObject:
        attachments = [
            {
                "id": str(next(self._ids)),
                "filename": f.filename,
                "size": len(f.data),
                "url": f"http://127.0.0.1:{self.port}/attachments/{f.filename}",
                "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{f.filename}",
                "content_type": f.content_type,
            }
            for f in files
        ]
        return {
            "id": str(next(self._ids)),
            "channel_id": str(channel_id),
            "type": 0,
            "author": self._bot_user(),
            "content": body.get("content") or "",
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "flags": body.get("flags", 0),
        }

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_until(self, probe: Callable[[], Any], within: float) -> Any:
        async def wait() -> Any:
            async with self._changed:
                while True:
                    value = probe()
                    if value:
                        return value
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise AssertionError(f"the emulator saw nothing matching within {within} s") from None


def _option_type(value: str | int | float | bool) -> int:
    """The application command option type Discord sends a value as: BOOLEAN, INTEGER, NUMBER or
    STRING."""
    if isinstance(value, bool):
        return 5
    if isinstance(value, str):
        return 3
    return 4 if isinstance(value, int) else 10


def _answer_of(response: web.StreamResponse) -> Any:
    if response.content_type != "application/json":
        return None  # a file (a user's attachment)
    if isinstance(response, web.Response) and isinstance(response.body, bytes) and response.body:
        return json.loads(response.body)
    return None


def _token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    return header.removeprefix("Bot ") if header else None


def _json(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py reads anything else (json_response's "; charset=utf-8")
    # as text.
    response = web.Response(body=json.dumps(body).encode(), status=status, headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


async def _read_body(request: web.Request) -> tuple[JsonObject | list[Any] | None, tuple[UploadedFile, ...]]:
    if not request.body_exists:
        return None, ()
    if request.content_type.startswith("multipart/"):
        payload: JsonObject | None = None
        files: list[UploadedFile] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            data = await part.read()
            if part.name == "payload_json":
                payload = json.loads(data)
            else:
                files.append(
                    UploadedFile(
                        field_name=part.name or "",
                        filename=part.filename or "",
                        content_type=part.headers.get("Content-Type", ""),
                        data=bytes(data),
                    )
                )
        return payload, tuple(files)
    text = await request.text()
    return (json.loads(text) if text else None), ()
