"""`bot.keep_alive`: a busy signal repeated while a job runs, stopped by its outcome."""

from __future__ import annotations

import asyncio

from bot.keep_alive import KeepAlive


async def test_the_signal_repeats_until_stopped_and_survives_a_failed_one() -> None:
    keep_alive = KeepAlive(every_s=0.01, max_s=60.0)
    calls = 0
    enough = asyncio.Event()

    async def signal() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("a courtesy that failed once")
        if calls >= 4:
            enough.set()
        return True

    keep_alive.start(7, signal)
    keep_alive.start(7, signal)  # already repeating: not a second loop
    async with asyncio.timeout(5):
        await enough.wait()
    keep_alive.stop(7)
    stopped_at = calls
    await asyncio.sleep(0.05)
    assert calls == stopped_at
    await keep_alive.close()


async def test_a_signal_that_never_can_again_ends_its_loop() -> None:
    keep_alive = KeepAlive(every_s=0.0, max_s=60.0)
    calls = 0

    async def blocked() -> bool:
        nonlocal calls
        calls += 1
        return False

    keep_alive.start(1, blocked)
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls == 1
    await keep_alive.close()


async def test_close_ends_every_loop() -> None:
    keep_alive = KeepAlive(every_s=0.01, max_s=60.0)
    started = asyncio.Event()

    async def signal() -> bool:
        started.set()
        return True

    keep_alive.start(1, signal)
    keep_alive.start(2, signal)
    async with asyncio.timeout(5):
        await started.wait()
        await keep_alive.close()
