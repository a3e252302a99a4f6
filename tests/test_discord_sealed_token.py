"""Interaction tokens sealed for the job row: only the bot's key opens them, and they never show."""

from __future__ import annotations

from bot.sealed_token import seal, unseal

TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXQtdG9rZW4tdGhhdC1saXZlcy0xNS1taW51dGVz"
KEY = "MTIzNDU2.bot-token"


def test_a_sealed_token_opens_with_the_bots_key_only() -> None:
    sealed = seal(TOKEN, KEY)
    assert TOKEN not in sealed
    assert unseal(sealed, KEY) == TOKEN
    assert unseal(sealed, "another bot token") is None


def test_sealing_twice_gives_different_text() -> None:
    assert seal(TOKEN, KEY) != seal(TOKEN, KEY)


def test_damaged_or_foreign_values_open_as_nothing() -> None:
    sealed = seal(TOKEN, KEY)
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    for value in (flipped, TOKEN, "sealed1:!!!", "sealed1:", ""):
        assert unseal(value, KEY) is None
