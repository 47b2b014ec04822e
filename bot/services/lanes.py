"""Per-chat lanes: answers in one chat are produced one at a time, in the order asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class _Lane:
    lock: asyncio.Lock
    users: int = 0


class Lanes:
    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        # Joining the lane happens before the first await, so arrival order is queue order
        # (asyncio.Lock wakes its waiters first in, first out).
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(asyncio.Lock())
        lane.users += 1
        try:
            async with lane.lock:
                yield
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]

    def busy(self, key: str) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.lock.locked()
