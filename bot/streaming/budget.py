"""The bot-wide Telegram budget: at most N calls in any rolling second, across processes.

Telegram lets a bot make about 30 calls per second and, like the fake Bot API, counts them in
a rolling window, bursts included. A call is counted when it reaches Telegram, which is some
moment between our writing it and its answer coming back; a burst reaches Telegram spread out
by network and server delays. So every call here counts from when its answer came back: from
then on it is surely in Telegram's window, and a whole window's calls may go at once (the
first texts of many new answers) without the next window's meeting the tail of this one.
(Counted from when they went out, bursts of 27 got 22 429s at 100 answers: BENCHMARKS.md.)

Two layers, both rolling windows of `BotWindow.seconds`:
- `SentLog`, in this process: a granted call fills the window until its answer, and counts
  from the answer on.
- `SharedBudget`, across processes: the same window in Redis (`BotBudgetStore.take`), so
  several processes of one bot stay inside it together. If Redis fails, the process goes on
  with its own log alone and says so once.

The window holds the calls `BOT_REQUESTS_PER_SECOND` allows (Telegram's 30 by default) and is
a little longer than a second (`BotWindow`), because clocks differ. It used to hold 10 % fewer,
for what Telegram does not publish about its counting; counted from answers, every call
already stays in our window a round trip longer than in Telegram's, and the headroom only cost
users time (BENCHMARKS.md). An operator who wants headroom sets a lower rate.
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

    # Counting calls from their answers covers the spread of a burst on the way to Telegram
    # (see above), and needs no margin in one process: an answer comes after Telegram counted
    # the call. The margin is for Redis: calls answered within it count from when they were
    # taken (`SharedBudget.LATE`), and the processes' wall clocks may differ a little (hosts
    # kept in sync by NTP differ by well under this). Each window of a burst pays it once:
    # 20 ms made 100 first texts 60 ms later than Telegram's limit allows.
    MARGIN = 0.005

    @classmethod
    def per_second(cls, rate: float) -> BotWindow:
        """`rate` calls per second as whole calls in a window of at least a second (Telegram
        counts per second): 30 -> 30 per 1.005 s, 2.5 -> 2 per 1.005 s, 0.5 -> 1 per 2.005 s."""
        calls = max(1, math.floor(rate))
        return cls(calls=calls, seconds=max(1.0, calls / rate) + cls.MARGIN)


class SentLog:
    """This process's calls of the last window, by the time their answers came back."""

    __slots__ = ("_pending", "_times", "window")

    def __init__(self, window: BotWindow) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._pending = 0  # granted, not yet answered: they will count from when they are

    def room(self, now: float) -> int:
        self._forget(now)
        return max(0, self.window.calls - len(self._times) - self._pending)

    def free_at(self, now: float) -> float:
        """When the next call may go: now if there is room, else when the oldest ages out
        (an unanswered call, a window from now at the earliest)."""
        self._forget(now)
        excess = len(self._times) + self._pending - self.window.calls
        if excess < 0:
            return now
        if excess < len(self._times):
            return self._times[excess] + self.window.seconds
        # Only unanswered calls fill the window; they are answered now at the earliest.
        return now + self.window.seconds

    def granted(self, calls: int) -> None:
        self._pending += calls

    def answered(self, at: float) -> None:
        """A granted call's answer came back at `at`; it counts from then on."""
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

    def answered(self, at: float) -> None:
        """One call taken earlier was answered at `at` (this process's monotonic clock)."""
        ...

    async def aclose(self) -> None: ...


class SharedBudget:
    """`BotWideBudget` through Redis: one atomic script call takes several calls at once.

    A call counts in Redis from when it was taken. When its answer comes back noticeably later
    (a slow Bot API, a busy event loop), it is postponed in Redis to the answer, in the
    background: otherwise another process could take the same window's calls again while
    Telegram may still be counting ours.
    """

    # A call answered within this of being taken counts in Redis a little early, by less than
    # the window is longer than Telegram's second (`BotWindow.MARGIN`), so that difference
    # absorbs it; every other call is postponed to its answer. Not more: a whole window's
    # calls answered 50 ms late would let another process's next burst meet them. (Answers
    # slower than this are postponed in the background, one batch at a time: cheap.)
    LATE = BotWindow.MARGIN

    def __init__(self, store: BotBudgetStore, bot_id: int, clock: Clock) -> None:
        self._store = store
        self._bot_id = bot_id
        self._clock = clock
        self._failing = False
        # (call, when it was taken): taken and not yet answered, oldest first.
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
        # Which of our taken calls was answered is irrelevant (they are alike), so a FIFO will do;
        # one taken for a waiter that left is postponed at most once more, then ages out.
        self._taken.extend((call, now) for call in calls)
        while len(self._taken) > 4 * window.calls:
            self._taken.popleft()
        return len(calls), now + (free_at - wall)

    def answered(self, at: float) -> None:
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
