"""A Telegram Bot API emulator on 127.0.0.1 that the real python-telegram-bot client talks to.

It implements the endpoints an /imagine bot uses (see docs in shared notes): real long polling for
getUpdates, form and multipart bodies, Message objects that PTB can parse. Every call is recorded so
tests can wait for one matching a predicate, always with a bounded timeout. Tests inject updates as a
given user in a given chat, and can make the next N calls of a method answer 429 with retry_after.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

BOT_USER_ID = 777000111
BOT_USERNAME = "majic_test_bot"

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TgUser:
    id: int
    first_name: str
    username: str | None = None

    def as_json(self) -> JsonObject:
        data: JsonObject = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            data["username"] = self.username
        return data


@dataclass(frozen=True, slots=True)
class TgChat:
    id: int
    type: str  # "private", "group" or "supergroup"
    title: str | None = None

    @staticmethod
    def private(user: TgUser) -> TgChat:
        return TgChat(id=user.id, type="private")

    @staticmethod
    def group(chat_id: int, title: str = "Test group") -> TgChat:
        return TgChat(id=chat_id, type="supergroup", title=title)

    def as_json(self) -> JsonObject:
        data: JsonObject = {"id": self.id, "type": self.type}
        if self.title:
            data["title"] = self.title
        return data


@dataclass(slots=True)
class Call:
    """One request the bot made: the method, its form fields (raw strings) and uploaded files."""

    index: int
    method: str
    token: str
    params: dict[str, str]
    files: dict[str, bytes]
    file_names: dict[str, str]
    status: int = 200
    response: Any = None
    at: float = field(default_factory=time.monotonic)

    def integer(self, name: str) -> int:
        return int(self.params[name])

    def json(self, name: str) -> Any:
        return json.loads(self.params[name])

    @property
    def chat_id(self) -> int | None:
        return int(self.params["chat_id"]) if "chat_id" in self.params else None

    def button_data(self) -> list[str]:
        """Every callback_data in this call's inline keyboard, row by row."""
        if "reply_markup" not in self.params:
            return []
        markup = self.json("reply_markup")
        return [button["callback_data"] for row in markup.get("inline_keyboard", []) for button in row]


class TelegramEmulator:
    """Start with `await TelegramEmulator.start(token)`; `base_url` and `base_file_url` go to PTB."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], JsonObject] = {}
        self.deleted: set[tuple[int, int]] = set()
        self._updates: list[JsonObject] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._callback_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._failures: dict[str, list[int]] = {}
        self._server_errors: dict[str, list[int]] = {}
        self._outage_status: int | None = None
        self._poll_generation = 0
        self._group_limit: tuple[int, float] | None = None
        self._group_sends: dict[int, list[float]] = {}
        self._polls_waiting = 0
        self.files: dict[str, bytes] = {}  # file_id -> what a user sent (getFile, then a download)
        self.hide_file_sizes = False  # a client that does not say a file's size (checked after download)
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    @classmethod
    async def start(cls, token: str) -> TelegramEmulator:
        emulator = cls(token)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", emulator._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", emulator._download)
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)  # it would log the token
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        emulator.port = runner.addresses[0][1]
        emulator._runner = runner
        return emulator

    async def close(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- what tests do ---------------------------------------------------------------------------
    def fail_next(self, method: str, count: int, retry_after: int = 1) -> None:
        """Answer the next `count` calls of `method` with 429 Too Many Requests and retry_after."""
        self._failures.setdefault(method, []).extend([retry_after] * count)

    def break_next(self, method: str, count: int, status: int = 502) -> None:
        """Answer the next `count` calls of `method` with a server error (Telegram having a bad time)."""
        self._server_errors.setdefault(method, []).extend([status] * count)

    def set_outage(self, down: bool, status: int = 502) -> None:
        """While down, every call except getUpdates is answered with `status` (the API is failing)."""
        self._outage_status = status if down else None

    async def wait_polling(self, within_s: float = 15.0) -> None:
        """Until a getUpdates call is waiting here (the bot is receiving)."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self._polls_waiting > 0)

        await asyncio.wait_for(wait(), within_s)

    async def end_long_polls(self) -> None:
        """Answer every getUpdates that is waiting now with no updates, as a poll timeout would."""
        async with self._changed:
            self._poll_generation += 1
            self._changed.notify_all()

    def limit_groups(self, messages: int = 20, period_s: float = 60.0) -> None:
        """Enforce Telegram's group flood limit: more than `messages` posts or edits in a group within
        `period_s` get 429 with retry_after (deletes, chat actions and callback answers do not count)."""
        self._group_limit = (messages, period_s)

    def revoke_token(self) -> None:
        """The bot's token was revoked: from now on every call is 401 Unauthorized."""
        self.token = "revoked:" + self.token

    async def send_text(self, user: TgUser, chat: TgChat, text: str) -> int:
        """A user writes `text` in `chat` (delivered through getUpdates); returns its message id."""
        update = self.message_update(user, chat, text)
        await self._add_update(update)
        return int(update["message"]["message_id"])

    async def send_reply(self, user: TgUser, chat: TgChat, text: str, reply_to: int) -> int:
        """A user answers message `reply_to` (theirs or the bot's) with `text`; returns its id."""
        update = self.message_update(user, chat, text, reply_to=reply_to)
        await self._add_update(update)
        return int(update["message"]["message_id"])

    async def send_picture(
        self, user: TgUser, chat: TgChat, data: bytes, caption: str = "", *, as_document: bool = False
    ) -> int:
        """A user sends a picture (a photo, or a file with `as_document`) with `caption`; returns its
        message id. The bytes are served by getFile and the file download URL."""
        message_id = self._next_message_id(chat.id)
        file_id = f"user-file-{chat.id}-{message_id}"
        self.files[file_id] = data
        size = None if self.hide_file_sizes else len(data)
        message: JsonObject = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat.as_json(),
            "from": user.as_json(),
        }
        if as_document:
            message["document"] = _without_none(
                {
                    "file_id": file_id,
                    "file_unique_id": file_id,
                    "file_name": "picture.png",
                    "mime_type": "image/png",
                    "file_size": size,
                }
            )
        else:
            width, height = await asyncio.to_thread(_image_size, data)
            message["photo"] = [
                _without_none(
                    {
                        "file_id": file_id,
                        "file_unique_id": file_id,
                        "width": width,
                        "height": height,
                        "file_size": size,
                    }
                )
            ]
        if caption:
            message["caption"] = caption
            message["caption_entities"] = _command_entities(caption)
        self.messages[(chat.id, message_id)] = message
        await self._add_update({"update_id": next(self._update_ids), "message": message})
        return message_id

    def message_update(
        self, user: TgUser, chat: TgChat, text: str, *, reply_to: int | None = None
    ) -> JsonObject:
        """The update for a user writing `text` in `chat`, without queueing it (for webhook tests).

        A leading /command gets its bot_command entity, as Telegram's clients send it.
        """
        message_id = self._next_message_id(chat.id)
        message: JsonObject = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat.as_json(),
            "from": user.as_json(),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = _command_entities(text)
        if reply_to is not None:
            message["reply_to_message"] = self.messages[(chat.id, reply_to)]
        self.messages[(chat.id, message_id)] = message
        return {"update_id": next(self._update_ids), "message": message}

    async def press_button(
        self, user: TgUser, chat: TgChat, message_id: int, data: str, *, inaccessible: bool = False
    ) -> str:
        """A user presses an inline button with `data` under the bot's message `message_id`.
        `inaccessible`: the message is sent as Telegram sends one too old to show (an
        InaccessibleMessage: chat, id and date 0, no text and no keyboard)."""
        query_id = str(next(self._callback_ids))
        message = self.messages[(chat.id, message_id)]
        if inaccessible:
            message = {"chat": message["chat"], "message_id": message_id, "date": 0}
        query: JsonObject = {
            "id": query_id,
            "from": user.as_json(),
            "chat_instance": f"ci{chat.id}",
            "data": data,
            "message": message,
        }
        await self._add_update({"callback_query": query})
        return query_id

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] = lambda call: True,
        *,
        after: int = 0,
        within_s: float = 15.0,
    ) -> Call:
        """The first successful call of `method` at index >= `after` matching `predicate`."""
        calls = await self.wait_for_count(method, 1, predicate, after=after, within_s=within_s)
        return calls[0]

    async def wait_for_count(
        self,
        method: str,
        count: int,
        predicate: Callable[[Call], bool] = lambda call: True,
        *,
        after: int = 0,
        within_s: float = 15.0,
    ) -> list[Call]:
        """The first `count` successful calls of `method` matching `predicate`; bounded by `within_s`."""

        def matching() -> list[Call]:
            return [call for call in self.calls_of(method, after=after) if predicate(call)]

        async def wait() -> list[Call]:
            async with self._changed:
                while len(found := matching()) < count:
                    await self._changed.wait()
                return found[:count]

        try:
            return await asyncio.wait_for(wait(), within_s)
        except TimeoutError:
            seen = [(call.method, call.status, call.params) for call in self.calls[after:]][-20:]
            message = f"{len(matching())} of {count} {method} calls within {within_s} s; last calls: {seen}"
            raise AssertionError(message) from None

    def calls_of(self, method: str, *, after: int = 0) -> list[Call]:
        return [call for call in self.calls[after:] if call.method == method and call.status == 200]

    # -- the server ------------------------------------------------------------------------------
    async def _download(self, request: web.Request) -> web.Response:
        """A file a user sent, as Telegram's file server gives it (GET {base_file_url}{token}/{path})."""
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        file_id = request.match_info["path"].rpartition("/")[2].partition(".")[0]
        data = self.files.get(file_id)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        file_names: dict[str, str] = {}
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[name] = value.file.read()
                file_names[name] = value.filename
            else:
                params[name] = str(value)
        call = Call(len(self.calls), method, token, params, files, file_names)
        if token != self.token:
            return await self._record(
                call, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            )
        broken = self._server_errors.get(method)
        if broken or (self._outage_status is not None and method != "getUpdates"):
            status = broken.pop(0) if broken else self._outage_status
            assert status is not None
            body = {"ok": False, "error_code": status, "description": "Bad Gateway"}
            return await self._record(call, status, body)
        pending = self._failures.get(method)
        retry_after = pending.pop(0) if pending else self._flood_wait(method, params)
        if retry_after is not None:
            body = {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry_after}",
                "parameters": {"retry_after": retry_after},
            }
            return await self._record(call, 429, body)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            body = {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            return await self._record(call, 404, body)
        try:
            result = await handler(call)
        except _ApiError as error:
            body = {"ok": False, "error_code": 400, "description": f"Bad Request: {error}"}
            return await self._record(call, 400, body)
        return await self._record(call, 200, {"ok": True, "result": result})

    def _flood_wait(self, method: str, params: dict[str, str]) -> int | None:
        """Seconds to wait if this call would go over the group limit; else None (and it counts)."""
        if self._group_limit is None or method not in _FLOOD_COUNTED or "chat_id" not in params:
            return None
        chat_id = int(params["chat_id"])
        if chat_id >= 0:
            return None
        limit, period_s = self._group_limit
        now = time.monotonic()
        sent = [at for at in self._group_sends.get(chat_id, []) if at > now - period_s]
        if len(sent) >= limit:
            self._group_sends[chat_id] = sent
            return max(1, math.ceil(sent[0] + period_s - now))
        self._group_sends[chat_id] = [*sent, now]
        return None

    async def _record(self, call: Call, status: int, body: JsonObject) -> web.Response:
        call.status = status
        call.response = body.get("result")
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    async def _add_update(self, payload: JsonObject) -> None:
        async with self._changed:
            update = payload if "update_id" in payload else {"update_id": next(self._update_ids), **payload}
            self._updates.append(update)
            self._changed.notify_all()

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _bot_message(self, call: Call, **content: Any) -> JsonObject:
        chat_id = call.integer("chat_id")
        message: JsonObject = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": _bot_user(),
            **content,
        }
        if "reply_markup" in call.params:
            message["reply_markup"] = call.json("reply_markup")
        if "reply_parameters" in call.params:
            # As Telegram does: the message replied to, one level deep.
            replied = self.messages.get((chat_id, call.json("reply_parameters")["message_id"]))
            if replied is not None:
                message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _existing(self, call: Call) -> JsonObject:
        key = (call.integer("chat_id"), call.integer("message_id"))
        if key not in self.messages or key in self.deleted:
            raise _ApiError("message to edit not found")
        return self.messages[key]

    # -- the methods -----------------------------------------------------------------------------
    async def _api_getMe(self, call: Call) -> JsonObject:
        return {**_bot_user(), "can_join_groups": True, "can_read_all_group_messages": False}

    async def _api_deleteWebhook(self, call: Call) -> bool:
        return True

    async def _api_setWebhook(self, call: Call) -> bool:
        return True

    async def _api_getWebhookInfo(self, call: Call) -> JsonObject:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    async def _api_setMyCommands(self, call: Call) -> bool:
        return True

    async def _api_sendChatAction(self, call: Call) -> bool:
        return True

    async def _api_answerCallbackQuery(self, call: Call) -> bool:
        return True

    async def _api_getUpdates(self, call: Call) -> list[JsonObject]:
        offset = int(call.params.get("offset", "0") or 0)
        limit = int(call.params.get("limit", "100") or 100)
        timeout = float(call.params.get("timeout", "0") or 0)
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            generation = self._poll_generation
            self._polls_waiting += 1
            self._changed.notify_all()
            try:
                while True:
                    if generation != self._poll_generation:
                        return []
                    if offset:
                        self._updates = [u for u in self._updates if u["update_id"] >= offset]
                    if self._updates or self._closing:
                        return self._updates[:limit]
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        return []
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        return []
            finally:
                self._polls_waiting -= 1

    async def _api_sendMessage(self, call: Call) -> JsonObject:
        return self._bot_message(call, text=call.params["text"])

    async def _api_editMessageText(self, call: Call) -> JsonObject:
        message = self._existing(call)
        if message.get("text") == call.params["text"] and "reply_markup" not in call.params:
            raise _ApiError(
                "message is not modified: specified new message content and reply markup are exactly "
                "the same as a current content and reply markup of the message"
            )
        message["text"] = call.params["text"]
        message["edit_date"] = int(time.time())
        if "reply_markup" in call.params:
            message["reply_markup"] = call.json("reply_markup")
        else:
            message.pop("reply_markup", None)
        return message

    async def _api_editMessageReplyMarkup(self, call: Call) -> JsonObject:
        message = self._existing(call)
        if "reply_markup" in call.params:
            message["reply_markup"] = call.json("reply_markup")
        else:
            message.pop("reply_markup", None)
        return message

    async def _api_deleteMessage(self, call: Call) -> bool:
        key = (call.integer("chat_id"), call.integer("message_id"))
        if key not in self.messages or key in self.deleted:
            raise _ApiError("message to delete not found")
        self.deleted.add(key)
        return True

    async def _api_sendPhoto(self, call: Call) -> JsonObject:
        data = call.files["photo"]
        width, height = await asyncio.to_thread(_image_size, data)
        photo = {"file_id": f"photo{call.index}", "file_unique_id": f"u{call.index}"}
        sizes = [{**photo, "width": width, "height": height, "file_size": len(data)}]
        content: JsonObject = {"photo": sizes}
        if "caption" in call.params:
            content["caption"] = call.params["caption"]
        return self._bot_message(call, **content)

    async def _api_getFile(self, call: Call) -> JsonObject:
        file_id = call.params["file_id"]
        if file_id not in self.files:
            raise _ApiError("invalid file_id")
        size = None if self.hide_file_sizes else len(self.files[file_id])
        return _without_none(
            {
                "file_id": file_id,
                "file_unique_id": file_id,
                "file_size": size,
                "file_path": f"photos/{file_id}.jpg",
            }
        )

    async def _api_sendMediaGroup(self, call: Call) -> list[JsonObject]:
        """An album: 2 to 10 photos or documents, each uploaded as the part `media` points at."""
        media = call.json("media")
        if not 2 <= len(media) <= 10:
            raise _ApiError("wrong number of media in the album")
        messages: list[JsonObject] = []
        for index, item in enumerate(media):
            data = call.files[item["media"].removeprefix("attach://")]
            if item["type"] == "photo":
                width, height = await asyncio.to_thread(_image_size, data)
                content: JsonObject = {
                    "photo": [
                        {
                            "file_id": f"photo{call.index}-{index}",
                            "file_unique_id": f"u{call.index}-{index}",
                            "width": width,
                            "height": height,
                            "file_size": len(data),
                        }
                    ]
                }
            else:
                content = {
                    "document": {
                        "file_id": f"doc{call.index}-{index}",
                        "file_unique_id": f"d{call.index}-{index}",
                        "file_size": len(data),
                    }
                }
            content["media_group_id"] = f"album{call.index}"
            if "caption" in item:
                content["caption"] = item["caption"]
            messages.append(self._bot_message(call, **content))
        return messages

    async def _api_sendDocument(self, call: Call) -> JsonObject:
        data = call.files["document"]
        document = {
            "file_id": f"doc{call.index}",
            "file_unique_id": f"d{call.index}",
            "file_name": call.file_names.get("document", "file"),
            "file_size": len(data),
        }
        content: JsonObject = {"document": document}
        if "caption" in call.params:
            content["caption"] = call.params["caption"]
        return self._bot_message(call, **content)


_FLOOD_COUNTED = frozenset({"sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup", "editMessageText"})


class _ApiError(Exception):
    """A 400 Bad Request with this description."""


def _bot_user() -> JsonObject:
    return {"id": BOT_USER_ID, "is_bot": True, "first_name": "majicbot", "username": BOT_USERNAME}


def _image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _command_entities(text: str) -> list[JsonObject]:
    """The bot_command entity of a text or caption that starts with a /command."""
    if not text.startswith("/"):
        return []
    command = text.split(maxsplit=1)[0]
    return [{"type": "bot_command", "offset": 0, "length": _utf16_len(command)}]


def _without_none(data: JsonObject) -> JsonObject:
    return {key: value for key, value in data.items() if value is not None}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
