"""The bot-wide budget (`bot/streaming/budget.py`): whole calls per rolling window, counted when
they go out, and shared through Redis with a local fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.streaming.budget import BotWindow, SentLog, SharedBudget, Steady
from bot.streaming.scheduler import FloodLimits, FloodScheduler
from storage import Storage
from tests.streaming.test_flood import FakeClock, most_in_any_window

BOT_ID = 42


def test_whole_calls_per_second_with_a_margin_for_jitter() -> None:
    def shape(rate: float) -> tuple[int, float]:
        window = BotWindow.per_second(rate)
        return window.calls, round(window.seconds, 9)

    # 10 % headroom below Telegram's rate, in a window a little longer than a second.
    assert shape(30) == (27, 1.02)
    # Telegram counts per second, so no window is shorter than one: 2.25 usable is 2 a second.
    assert shape(2.5) == (2, 1.02)
    assert shape(0.5) == (1, round(1 / 0.45 + 0.02, 9))


def test_sent_log_counts_a_call_from_when_it_went_out_not_when_it_was_granted() -> None:
    log = SentLog(BotWindow(calls=2, seconds=1.0))
    log.granted(2)  # at t=10, but the event loop was busy...

    assert log.room(10.0) == 0
    assert log.free_at(10.0) == pytest.approx(11.0), "pending calls go out now at the earliest"

    log.sent(10.4)  # ...and they went out 0.4 s later
    log.sent(10.5)

    assert log.free_at(10.9) == pytest.approx(11.4)
    assert log.room(11.4) == 1
    assert log.room(11.5) == 2


def test_steady_spreads_calls_evenly_and_catches_up_a_few_calls_after_a_pause() -> None:
    steady = Steady(BotWindow(calls=10, seconds=1.0))  # one call per 0.1 s
    burst = Steady.BURST
    assert 1 < burst <= 4, "a few calls back to back, never a second's worth"

    assert steady.allowance(0.0) == burst
    steady.spend(burst, 0.0)
    assert steady.allowance(0.05) == 0
    assert steady.next_at() == pytest.approx(0.1)
    # On schedule, one call per spacing: a dispatcher on time never sends two at once.
    for step in range(1, 6):
        at = 0.1 * step
        assert steady.allowance(at) == 1
        steady.spend(1, at)
        assert steady.allowance(at + 0.05) == 0

    # A dispatcher that woke 5 s late may send BURST calls, not the 49 it "missed".
    assert steady.allowance(5.0) == burst

    # Held back on purpose (the window was full) until 7.0: no calls are owed at 7.0, and
    # only a wake-up later than that catches up.
    steady.hold(7.0)
    assert steady.allowance(6.9) == 0
    assert steady.allowance(7.0) == 1
    assert steady.allowance(7.0 + 0.1 * burst) == burst


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

    assert most_in_any_window(times, 1.0) <= 4, "5 a second, less the headroom"
    assert max(times) < 15 / 4 * 1.02, "4 per window, not stalled"
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


async def test_a_call_that_goes_out_late_is_postponed_in_redis() -> None:
    store, clock = RecordingStore(), FakeClock()
    shared = SharedBudget(store, BOT_ID, clock)
    window = BotWindow(calls=27, seconds=1.02)
    try:
        assert await shared.take(2, window) == (2, clock.now())
        shared.sent(clock.now() + 0.01)  # in time: counted where it was taken
        clock.advance(0.2)
        shared.sent(clock.now())  # 0.2 s after it was taken
        await settle()
        assert [len(calls) for calls, _ in store.postponed] == [1]
        assert store.postponed[0][1] == clock.wall()
    finally:
        await shared.aclose()
