"""Time, injected: pacing code asks a Clock instead of calling time/asyncio directly.

Tests pass a `ScaledClock` so a 1-second edit interval or a 3-second `retry_after` takes a few
milliseconds of wall time while every ratio between intervals stays the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from bot.lean_event import LeanEvent


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, on the same scale as `now`: what several processes (or
        machines with synchronised clocks) agree on."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: LeanEvent, seconds: float) -> bool:
        """Wait for `event` at most `seconds` (clock seconds); True if it was set."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: LeanEvent, seconds: float) -> bool:
        return await event.wait_for(seconds)


class ScaledClock:
    """Runs `speedup` times faster than real time (for tests and benchmarks)."""

    def __init__(self, speedup: float) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.speedup

    def wall(self) -> float:
        return time.time() * self.speedup

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speedup)

    async def wait(self, event: LeanEvent, seconds: float) -> bool:
        return await event.wait_for(max(0.0, seconds) / self.speedup)
