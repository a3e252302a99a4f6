"""Interaction tokens as they are kept in job rows: sealed with a key only the bot's chat processes have.

Any chat process (or this one after a restart) edits a job's status line with the interaction token
stored in the row. A token is a credential for 15 minutes, and database drivers log statement
parameters at DEBUG, and backups copy rows: so the row holds it encrypted and authenticated with a key
derived from the bot token, which every chat process serving the bot has and nothing else needs.

The cipher is SHA-256 in counter mode with a random nonce, and an HMAC-SHA-256 tag: the standard library
only, and a sealed token that was not made with this key (the bot token changed) opens as None.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_NONCE = 16
_TAG = 16
_PREFIX = "sealed1:"


def seal(token: str, key: str) -> str:
    """`token` encrypted and authenticated under `key`, as text for a database column."""
    nonce = secrets.token_bytes(_NONCE)
    body = _xor(token.encode(), _keystream(key, nonce, len(token.encode())))
    tag = _tag(key, nonce + body)
    return _PREFIX + base64.urlsafe_b64encode(nonce + body + tag).decode("ascii")


def unseal(sealed: str, key: str) -> str | None:
    """The token `seal` was given; None if `sealed` was not made with `key` or is damaged."""
    if not sealed.startswith(_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed.removeprefix(_PREFIX).encode("ascii"))
    except ValueError:
        return None
    if len(raw) < _NONCE + _TAG:
        return None
    nonce, body, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
    if not hmac.compare_digest(tag, _tag(key, nonce + body)):
        return None
    try:
        return _xor(body, _keystream(key, nonce, len(body))).decode()
    except UnicodeDecodeError:
        return None


def _keystream(key: str, nonce: bytes, length: int) -> bytes:
    secret = hashlib.sha256(b"majicbot status token cipher\0" + key.encode()).digest()
    blocks = (length + 31) // 32
    return b"".join(
        hashlib.sha256(secret + nonce + counter.to_bytes(8, "big")).digest() for counter in range(blocks)
    )[:length]


def _tag(key: str, data: bytes) -> bytes:
    secret = hashlib.sha256(b"majicbot status token tag\0" + key.encode()).digest()
    return hmac.new(secret, data, hashlib.sha256).digest()[:_TAG]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))
