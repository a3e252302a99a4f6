"""engine.prompt_cache: bounded LRU of prompt embeddings (rerolls skip the text encoders)."""

from __future__ import annotations

import pytest

from engine.prompt_cache import PromptCache


def test_reroll_hits_and_lru_evicts_the_oldest() -> None:
    cache: PromptCache[tuple[str, int], str] = PromptCache(2)
    assert cache.get(("a cat", 512)) is None
    cache.put(("a cat", 512), "emb-cat")
    cache.put(("a dog", 512), "emb-dog")
    assert cache.get(("a cat", 512)) == "emb-cat"  # now most recent
    cache.put(("a fox", 512), "emb-fox")  # evicts the dog, not the cat
    assert ("a dog", 512) not in cache
    assert cache.get(("a cat", 512)) == "emb-cat"
    assert len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 1)


def test_capacity_zero_disables() -> None:
    cache: PromptCache[str, int] = PromptCache(0)
    cache.put("x", 1)
    assert cache.get("x") is None and len(cache) == 0


def test_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PromptCache(-1)
