"""Moved to `bot.sealed_token` (nothing in it is Discord's); kept so old imports still work."""

from bot.sealed_token import seal, unseal

__all__ = ["seal", "unseal"]
