"""Time as fusewatch sees it: wallclock for stamping, monotonic time for pacing.

Everything that waits or stamps takes a `Clock`, so tests can drive time by hand with
`streams.testing.ManualClock` instead of sleeping. Timestamps are int nanoseconds since
the epoch and window ids int milliseconds: the unit constants live here, once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


class Clock(Protocol):
    """Wallclock in ns, monotonic seconds, and an awaitable sleep."""

    def wall_ns(self) -> int: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))
