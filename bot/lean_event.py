"""An `asyncio.Event` that costs nothing while nobody waits, with a timed wait of its own.

Every answer in flight holds a few events (stop asked, record saved, writer woken), and most of
the time nobody waits on them. `asyncio.Event` allocates its waiters' deque when it is made:
~760 bytes, ~1 KB with the event, ~3 MB at 1,000 answers (a census of live objects in the
streaming benchmark). `LeanEvent` keeps a list of waiters only while there are some.

`wait_for(seconds)` waits with a timer instead of `asyncio.wait_for`, which on Python 3.11
wraps the wait in a task of its own each time.
"""

from __future__ import annotations

import asyncio
from typing import Literal


class LeanEvent:
    """`asyncio.Event`'s `set`, `clear`, `is_set` and `wait`, plus `waiter` and `wait_for`."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        if self._flag:
            return
        self._flag = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._flag = False

    def waiter(self) -> asyncio.Future[bool]:
        """A future of its own for one caller, resolved (True) once the event is set; for
        `asyncio.wait` beside other futures. Cancelling it affects no other waiter."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._flag:
            waiter.set_result(True)
            return waiter
        if self._waiters is None:
            self._waiters = []
        else:  # a waiter given up (cancelled, timed out) is dropped here, not kept until set
            self._waiters = [w for w in self._waiters if not w.done()]
        self._waiters.append(waiter)
        return waiter

    async def wait(self) -> Literal[True]:
        """Wait until the event is set (at once if it is)."""
        if self._flag:
            return True
        waiter = self.waiter()
        try:
            await waiter
        finally:
            self._forget(waiter)
        return True

    async def wait_for(self, seconds: float) -> bool:
        """Wait at most `seconds`; True if the event was set, False on the timeout."""
        if self._flag:
            return True
        waiter = self.waiter()
        timer = asyncio.get_running_loop().call_later(max(0.0, seconds), _time_out, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._forget(waiter)

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        if self._waiters is None:
            return
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if not self._waiters:
            self._waiters = None


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
