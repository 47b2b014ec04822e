"""Per-chat lanes: answers in one chat are produced one at a time, in the order asked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(slots=True)
class _Lane:
    lock: asyncio.Lock
    users: int = 0


class Lanes:
    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}

    def hold(self, key: str) -> _Hold:
        """`async with lanes.hold(key):` runs the block when the lane's earlier holders are
        done. Joining happens in the first step of the `async with`, before any await, so the
        order tasks reach it is the order they are served (asyncio.Lock is first in, first
        out)."""
        return _Hold(self._lanes, key)

    def busy(self, key: str) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.lock.locked()


class _Hold:
    """One answer's place in its lane, held for the whole answer. A class, not an
    `asynccontextmanager`: every answer in flight holds one, and a generator-based block costs
    ~600 bytes more (generator, frame, its weak reference in the loop, the wrapper)."""

    __slots__ = ("_key", "_lane", "_lanes")

    def __init__(self, lanes: dict[str, _Lane], key: str) -> None:
        self._lanes = lanes
        self._key = key
        self._lane: _Lane | None = None

    async def __aenter__(self) -> None:
        lane = self._lanes.get(self._key)
        if lane is None:
            lane = self._lanes[self._key] = _Lane(asyncio.Lock())
        lane.users += 1
        self._lane = lane
        try:
            await lane.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._lane is not None
        self._lane.lock.release()
        self._leave()

    def _leave(self) -> None:
        assert self._lane is not None
        self._lane.users -= 1
        if self._lane.users == 0:
            del self._lanes[self._key]
        self._lane = None
