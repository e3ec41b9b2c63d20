"""The one backoff helper: exponential delays between retries, capped, reset after success.

Every retry loop of fusewatch (a crashed role, Redis or the broker unavailable, a camera
reconnecting) waits through a `Delays` made from a `Backoff`, so the policy is stated once
per kind of retry and a stop event always cuts the wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays of `initial`, times `factor` per retry, at most `maximum`; back to `initial` after
    `healthy_after` seconds without a retry (a role that ran well for a minute starts afresh)."""

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0
    healthy_after: float = 60.0

    def delays(self, clock: Callable[[], float] = time.monotonic) -> Delays:
        return Delays(self, clock)


SERVICE_RETRY = Backoff(initial=0.2, maximum=5.0)
"""Waiting for Redis or the broker to come back (fuse, the alert feed, buffered writes, topic setup)."""

ROLE_RESTART = Backoff(initial=1.0, maximum=30.0)
"""Restarting a crashed role (the supervisor)."""


class Delays:
    """The state of one retry loop: the next delay, grown by each wait, reset by `succeeded`."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = backoff
        self._clock = clock
        self._delay = backoff.initial
        self._last_wait: float | None = None

    @property
    def next(self) -> float:
        """The delay the next `wait` will use."""
        if self._last_wait is not None and self._clock() - self._last_wait >= self._backoff.healthy_after:
            return self._backoff.initial
        return self._delay

    def succeeded(self) -> None:
        self._delay = self._backoff.initial
        self._last_wait = None

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep the next delay (less if `stop` is set meanwhile); False when stopped."""
        delay = self.next
        self._delay = min(delay * self._backoff.factor, self._backoff.maximum)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        self._last_wait = self._clock()
        return stop is None or not stop.is_set()
