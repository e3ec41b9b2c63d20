"""The one backoff helper: growth, cap, reset after success or a healthy spell, and stop cutting a wait short."""

from __future__ import annotations

import asyncio

from streams.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_delays_grow_to_the_cap_and_reset() -> None:
    clock = Clock()
    delays = Backoff(initial=0.001, maximum=0.004, factor=2.0, healthy_after=60.0).delays(clock)
    seen = []
    for _ in range(4):
        seen.append(delays.next)
        await delays.wait()
    assert seen == [0.001, 0.002, 0.004, 0.004]
    delays.succeeded()
    assert delays.next == 0.001
    await delays.wait()
    await delays.wait()
    clock.now += 61  # ran well for a minute since the last retry
    assert delays.next == 0.001


async def test_a_stop_cuts_the_wait_short() -> None:
    stop = asyncio.Event()
    delays = Backoff(initial=30.0).delays()
    loop = asyncio.get_running_loop()
    began = loop.time()
    loop.call_later(0.05, stop.set)
    assert await delays.wait(stop) is False
    assert loop.time() - began < 5
