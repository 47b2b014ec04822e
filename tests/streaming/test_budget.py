"""The bot-wide budget (`bot/streaming/budget.py`): whole calls per rolling window, counted from
their answers, and shared through Redis with a local fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.streaming.budget import BotWindow, SentLog, SharedBudget
from bot.streaming.clock import MonotonicClock
from bot.streaming.scheduler import FloodLimits, FloodScheduler
from storage import Storage
from tests.streaming.test_flood import FakeClock, most_in_any_window

BOT_ID = 42


def test_whole_calls_per_second_with_a_margin_for_jitter() -> None:
    def shape(rate: float) -> tuple[int, float]:
        window = BotWindow.per_second(rate)
        return window.calls, round(window.seconds, 9)

    # Telegram's rate, as whole calls, in a window a little longer than a second.
    assert shape(30) == (30, 1.005)
    # Telegram counts per second, so no window is shorter than one: 2.5 is 2 a second.
    assert shape(2.5) == (2, 1.005)
    assert shape(0.5) == (1, 2.005)


def test_sent_log_counts_a_call_from_when_it_was_answered_not_when_it_was_granted() -> None:
    log = SentLog(BotWindow(calls=2, seconds=1.0))
    log.granted(2)  # at t=10; Telegram counts them when they reach it, some time later...

    assert log.room(10.0) == 0
    assert log.free_at(10.0) == pytest.approx(11.0), "unanswered calls count from now at least"

    log.answered(10.4)  # ...surely before their answers came back
    log.answered(10.5)

    assert log.free_at(10.9) == pytest.approx(11.4)
    assert log.room(11.4) == 1
    assert log.room(11.5) == 2


async def test_a_slowly_answered_burst_holds_the_next_back_a_window_after_the_answers() -> None:
    """A burst reaches Telegram spread out, and Telegram counts each call when it arrives: at
    the latest when its answer comes back. Counting from there, the next burst can never
    meet the tail of the previous one in Telegram's window. (Real time: the bound below is
    a lower one, which a slow machine only makes later.)"""
    clock = MonotonicClock()
    flood = FloodScheduler(clock, FloodLimits(bot_per_second=30.0))  # 30 per 1.005 s
    granted: list[float] = []
    start = clock.now()

    async def slow_call(chat_id: int) -> None:
        async with flood.call(chat_id):
            granted.append(clock.now() - start)
            await asyncio.sleep(0.3)  # the answer takes 0.3 s

    try:
        await asyncio.gather(*(slow_call(chat_id) for chat_id in range(1, 32)))
    finally:
        await flood.aclose()

    granted.sort()
    assert granted[29] < 0.3, "the first 30 go at once"
    assert granted[30] >= 0.3 + 1.005, "the 31st a window after the first answers, not sooner"


class BrokenStore:
    async def take(
        self, bot_id: int, now: float, want: int, limit: int, window: float
    ) -> tuple[list[str], float]:
        raise RedisConnectionError("Connection refused")

    async def postpone(self, bot_id: int, calls: Sequence[str], to: float) -> None:
        raise RedisConnectionError("Connection refused")


async def test_without_redis_the_process_paces_itself_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    shared = SharedBudget(BrokenStore(), BOT_ID, clock)
    flood = FloodScheduler(clock, FloodLimits(bot_per_second=5.0), shared)
    times: list[float] = []
    start = clock.now()

    async def one_call(chat_id: int) -> None:
        await flood.turn(chat_id)
        times.append(clock.now() - start)

    with caplog.at_level(logging.WARNING, logger="relaygram.flood"):
        try:
            for chat_id in range(1, 16):
                await one_call(chat_id)
        finally:
            await flood.aclose()

    assert most_in_any_window(times, 1.005) <= 5, "5 a second"
    assert max(times) < 15 / 5 * 1.005, "5 per window, not stalled"
    warnings = [r for r in caplog.records if "shared Telegram budget unavailable" in r.message]
    assert len(warnings) == 1


async def test_shared_budget_answers_on_the_process_clock() -> None:
    """Redis works in wall-clock time; the scheduler sleeps on its monotonic clock."""

    class OffsetClock(FakeClock):
        def wall(self) -> float:
            return self.time + 1_700_000_000.0

    clock = OffsetClock()
    storage = Storage.on_redis(fakeredis.FakeAsyncRedis(decode_responses=True))
    shared = SharedBudget(storage.bot_budget, BOT_ID, clock)
    window = BotWindow(calls=3, seconds=1.0)

    assert await shared.take(2, window) == (2, clock.now())
    clock.advance(0.25)
    taken, again_at = await shared.take(5, window)

    assert taken == 1
    assert again_at == pytest.approx(clock.now() + 0.75)


class RecordingStore:
    """The real Redis script (on fakeredis), recording what is postponed."""

    def __init__(self) -> None:
        self.inner = Storage.on_redis(fakeredis.FakeAsyncRedis(decode_responses=True)).bot_budget
        self.postponed: list[tuple[list[str], float]] = []

    async def take(
        self, bot_id: int, now: float, want: int, limit: int, window: float
    ) -> tuple[list[str], float]:
        return await self.inner.take(bot_id, now, want, limit, window)

    async def postpone(self, bot_id: int, calls: Sequence[str], to: float) -> None:
        self.postponed.append((list(calls), to))
        await self.inner.postpone(bot_id, calls, to)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_call_answered_late_is_postponed_in_redis() -> None:
    store, clock = RecordingStore(), FakeClock()
    shared = SharedBudget(store, BOT_ID, clock)
    window = BotWindow(calls=30, seconds=1.005)
    try:
        assert await shared.take(2, window) == (2, clock.now())
        shared.answered(clock.now() + 0.002)  # at once: counted where it was taken
        clock.advance(0.2)
        shared.answered(clock.now())  # 0.2 s after it was taken
        await settle()
        assert [len(calls) for calls, _ in store.postponed] == [1]
        assert store.postponed[0][1] == clock.wall()
    finally:
        await shared.aclose()


async def test_a_call_made_inside_another_calls_block_does_not_wait_on_it_forever() -> None:
    """A failed edit is resent as a new message inside the edit's block. With room for one
    call, the resend must not wait for a slot its own unanswered edit holds."""
    clock = FakeClock()
    flood = FloodScheduler(clock, FloodLimits(bot_per_second=1.2))  # one call per 1.005 s
    assert BotWindow.per_second(1.2).calls == 1
    start = clock.now()
    granted: list[float] = []

    async def edit_then_resend() -> None:
        async with flood.call(1001):
            granted.append(clock.now() - start)
            async with flood.call(1002):  # the edit failed: send the page anew
                granted.append(clock.now() - start)

    try:
        await asyncio.wait_for(edit_then_resend(), timeout=5.0)
    finally:
        await flood.aclose()

    assert granted == [0.0, pytest.approx(1.005)]
