"""The bot-wide budget (`bot/streaming/budget.py`): whole calls per rolling window, counted when
they go out, and shared through Redis with a local fallback."""

from __future__ import annotations

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


def test_steady_spreads_calls_evenly_and_catches_up_one_call_after_a_pause() -> None:
    steady = Steady(BotWindow(calls=10, seconds=1.0))  # one call per 0.1 s

    assert steady.allowance(0.0) == 2, "two back to back at most"
    steady.spend(2, 0.0)
    assert steady.allowance(0.05) == 0
    assert steady.next_at() == pytest.approx(0.1)
    assert steady.allowance(0.1) == 1
    steady.spend(1, 0.1)
    assert steady.allowance(0.15) == 0

    # A dispatcher that woke 5 s late may send two calls, not the 49 it "missed".
    assert steady.allowance(5.0) == 2


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
