"""The bot-wide Telegram budget: at most N calls in any rolling second, across processes.

Telegram lets a bot make about 30 calls per second and, like the fake Bot API, counts them in
a rolling window, bursts included. The bot nevertheless spends its budget evenly: a burst
reaches Telegram spread out by network delays, and part of it is counted with the next
second's calls (measured in BENCHMARKS.md: bursts of 27 got 22 429s at 100 answers).

Three layers; the last two are rolling windows of `BotWindow.seconds`:
- `Steady`, in this process: calls evenly spaced, never a second's worth at once.
- `SentLog`, in this process: the times its calls actually went out, recorded when the caller
  resumes right before it writes the request, not when the call was granted. A loop that lags
  after a grant therefore cannot bunch two windows' worth of calls into one second.
- `SharedBudget`, across processes: the same window in Redis (`BotBudgetStore.take`), so
  several processes of one bot stay inside it together. If Redis fails, the process goes on
  with its own log alone and says so once.

The window holds 10 % fewer calls than Telegram allows and is a little longer than a second
(`BotWindow`): Telegram counts our calls when they reach it, and a burst reaches it spread out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from bot.streaming.clock import Clock
from storage import BotBudgetStore

logger = logging.getLogger("relaygram.flood")


@dataclass(frozen=True, slots=True)
class BotWindow:
    calls: int
    seconds: float

    # Telegram sees our calls with network jitter, and a burst arrives spread out: what went
    # out in one second may be counted partly in the next. Keeping 10 % of the calls free
    # absorbs a few such calls at any scale; the margin, the difference in clocks.
    HEADROOM = 0.9
    MARGIN = 0.02

    @classmethod
    def per_second(cls, rate: float) -> BotWindow:
        """`rate` calls per second, less the headroom, as whole calls in a window of at least
        a second (Telegram counts per second): 30 -> 27 per 1.02 s, 2.5 -> 2 per 1.02 s,
        0.5 -> 1 per ~2.24 s."""
        usable = rate * cls.HEADROOM
        calls = max(1, math.floor(usable))
        return cls(calls=calls, seconds=max(1.0, calls / usable) + cls.MARGIN)


class Steady:
    """This process's calls spread evenly over the window, at most `BURST` back to back.

    The window alone would let a whole second's calls go at once, and then again one window
    later. Measured, that trips Telegram's limit: a burst reaches the Bot API spread out by
    network and server delays (up to 0.2 s in the benchmark), so part of one second's burst
    is counted together with the next. Evenly spaced calls shift by a call or two, which the
    headroom absorbs. `BURST` lets a dispatcher that woke late catch up the calls of the last
    `BURST - 1` spacings (~0.11 s at 27/s), not more: with 1,000 answers streaming the event
    loop runs ~0.1 s late, and catching up only one call held the bot to about half its
    budget (measured: 1,000 answers, ratio 1.37 -> 1.25, still 0 429s; BENCHMARKS.md).
    (A virtual-scheduling rate limiter, GCRA.)
    """

    BURST = 4

    __slots__ = ("_due", "_spacing", "_tolerance")

    def __init__(self, window: BotWindow) -> None:
        self._spacing = window.seconds / window.calls
        self._tolerance = (self.BURST - 1) * self._spacing
        self._due = -math.inf  # when the next call would be exactly on schedule

    def allowance(self, now: float) -> int:
        """How many calls may go now."""
        slack = now + self._tolerance - max(self._due, now)
        return max(0, math.floor(slack / self._spacing + 1e-9) + 1)

    def next_at(self) -> float:
        return self._due - self._tolerance

    def spend(self, calls: int, now: float) -> None:
        self._due = max(self._due, now) + calls * self._spacing

    def hold(self, until: float) -> None:
        """Nothing may go before `until` for another reason (the window is full, a 429): the
        calls not made meanwhile are not owed, so no burst follows. Only a wake-up later than
        `until` catches up calls."""
        self._due = max(self._due, until + self._tolerance)


class SentLog:
    """This process's calls of the last window, by the time they went out."""

    __slots__ = ("_pending", "_times", "window")

    def __init__(self, window: BotWindow) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._pending = 0  # granted but not yet gone out: they will count from when they do

    def room(self, now: float) -> int:
        self._forget(now)
        return max(0, self.window.calls - len(self._times) - self._pending)

    def free_at(self, now: float) -> float:
        """When the next call may go: now if there is room, else when the oldest ages out."""
        self._forget(now)
        excess = len(self._times) + self._pending - self.window.calls
        if excess < 0:
            return now
        if excess < len(self._times):
            return self._times[excess] + self.window.seconds
        # Only calls still pending fill the window; they go out now at the earliest.
        return now + self.window.seconds

    def granted(self, calls: int) -> None:
        self._pending += calls

    def sent(self, at: float) -> None:
        self._pending = max(0, self._pending - 1)
        self._times.append(at)

    def _forget(self, now: float) -> None:
        horizon = now - self.window.seconds
        while self._times and self._times[0] <= horizon:
            self._times.popleft()


class BotWideBudget(Protocol):
    """The part of the bot-wide budget other processes of the bot spend too."""

    async def take(self, want: int, window: BotWindow) -> tuple[int, float]:
        """Spend up to `want` calls now. Returns how many, and when fewer, when (on this
        process's monotonic clock) to ask again."""
        ...

    def sent(self, at: float) -> None:
        """One call taken earlier went out at `at` (this process's monotonic clock)."""
        ...

    async def aclose(self) -> None: ...


class SharedBudget:
    """`BotWideBudget` through Redis: one atomic script call takes several calls at once.

    A call counts in Redis from when it was taken. When it goes out noticeably later (the event
    loop was busy), it is postponed in Redis to when it went out, in the background: otherwise
    another process could take the same window's calls again while ours are still going out.
    """

    # Evenly spaced calls shifted by less than this cost a call or two of the headroom;
    # postponing them all would double the Redis traffic of a busy bot.
    LATE = 0.05

    def __init__(self, store: BotBudgetStore, bot_id: int, clock: Clock) -> None:
        self._store = store
        self._bot_id = bot_id
        self._clock = clock
        self._failing = False
        # (call, when it was taken): taken and not yet gone out, oldest first.
        self._taken: deque[tuple[str, float]] = deque()
        self._late: list[str] = []
        self._postponing: asyncio.Task[None] | None = None

    async def take(self, want: int, window: BotWindow) -> tuple[int, float]:
        wall, now = self._clock.wall(), self._clock.now()
        try:
            calls, free_at = await self._store.take(
                self._bot_id, wall, want, window.calls, window.seconds
            )
        except RedisError as exc:
            if not self._failing:
                logger.warning("shared Telegram budget unavailable (%s); pacing locally", exc)
                self._failing = True
            return want, now  # this process's SentLog still keeps its own calls in the window
        if self._failing:
            logger.info("shared Telegram budget available again")
            self._failing = False
        # Which of our taken calls went out is irrelevant (they are alike), so a FIFO will do;
        # one taken for a waiter that left is postponed at most once more, then ages out.
        self._taken.extend((call, now) for call in calls)
        while len(self._taken) > 4 * window.calls:
            self._taken.popleft()
        return len(calls), now + (free_at - wall)

    def sent(self, at: float) -> None:
        if not self._taken:
            return
        call, taken_at = self._taken.popleft()
        if at - taken_at > self.LATE:
            self._late.append(call)
            if self._postponing is None or self._postponing.done():
                self._postponing = asyncio.create_task(self._postpone(), name="budget-postpone")

    async def _postpone(self) -> None:
        while self._late:
            calls, self._late = self._late, []
            try:
                await self._store.postpone(self._bot_id, calls, self._clock.wall())
            except RedisError as exc:
                logger.debug(
                    "could not postpone %d calls in the shared budget: %s", len(calls), exc
                )

    async def aclose(self) -> None:
        task, self._postponing = self._postponing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
