"""The flood budget (`bot/streaming/scheduler.py`, formerly `flood.py`): Telegram's pace per chat,
429 windows, FIFO waiters, priorities under the bot-wide budget, pruning of idle chats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.lean_event import LeanEvent
from bot.streaming.scheduler import FloodLimits, FloodScheduler, Priority

PRIVATE = 1001
OTHER_PRIVATE = 1002
GROUP = -100_123


class FakeClock:
    """Time moves only when the code under test sleeps or waits (or the test advances it).

    Only the scheduler's dispatcher ever sleeps here, so jumping straight to the end of each
    sleep, once everything else has run, is exact: the test runs instantly and every time is a
    precise number.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def wall(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        await self._settle()
        self.time += max(0.0, seconds)

    async def wait(self, event: LeanEvent, seconds: float) -> bool:
        await self._settle()
        if event.is_set():
            return True
        self.time += max(0.0, seconds)
        return False

    @staticmethod
    async def _settle() -> None:
        """Let every task that can run now (a caller just granted its turn) run first, so
        it sees the time at which it was let through."""
        for _ in range(5):
            await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.time += seconds


# A bot-wide budget that never binds, to look at one chat's pacing alone: its calls are
# spaced by a nanosecond, hence `approx` (to 10 microseconds) for the times below.
NO_BOT_LIMIT = FloodLimits(bot_per_second=1e9)


def approx(expected: object) -> Any:
    return pytest.approx(expected, abs=1e-5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def flood(clock: FakeClock) -> AsyncIterator[FloodScheduler]:
    scheduler = FloodScheduler(clock, NO_BOT_LIMIT)
    yield scheduler
    await scheduler.aclose()


async def call_times(
    flood: FloodScheduler, clock: FakeClock, chat_id: int, calls: int
) -> list[float]:
    """When each of `calls` back-to-back calls to the chat was let through, from now."""
    start = clock.now()
    times = []
    for _ in range(calls):
        await flood.turn(chat_id)
        times.append(clock.now() - start)
    return times


def most_in_any_window(times: list[float], window: float) -> int:
    return max(
        sum(1 for other in times[i:] if other - start < window - 1e-9)
        for i, start in enumerate(times)
    )


# --- pace per chat -------------------------------------------------------------------------------


async def test_private_chat_allows_a_burst_of_two_then_one_per_second(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    times = await call_times(flood, clock, PRIVATE, 8)

    assert times == approx([0, 0, 1, 2, 3, 4, 5, 6])


async def test_private_chat_burst_comes_back_after_a_pause(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    await call_times(flood, clock, PRIVATE, 4)

    clock.advance(10)  # idle: the budget refills, but only up to the burst
    times = await call_times(flood, clock, PRIVATE, 4)

    assert times == approx([0, 0, 1, 2])


async def test_group_spreads_updates_evenly_over_its_20_calls_a_minute(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    start = clock.now()
    times = []
    for _ in range(45):
        await flood.turn(GROUP, Priority.UPDATE)
        times.append(clock.now() - start)

    spacing = 61 / 20  # Telegram's 20 per minute, counted over 61 s for network jitter
    assert times == approx([spacing * n for n in range(45)])
    assert most_in_any_window(times, 60.0) <= 20, "Telegram allows 20 per minute in a group"


async def test_group_sends_what_users_wait_for_at_once_while_the_minute_has_room(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    await flood.turn(GROUP, Priority.UPDATE)  # an answer growing...
    clock.advance(0.5)

    first_texts = await call_times(flood, clock, GROUP, 19)  # ...then urgent calls: no spacing

    assert first_texts == approx([0.0] * 19)
    assert (await call_times(flood, clock, GROUP, 1))[0] == approx(60.5), (
        "the 21st call waits until the first leaves the 61 s window"
    )


async def test_group_never_exceeds_20_calls_in_any_minute_with_idle_gaps(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    times: list[float] = []
    start = clock.now()
    for round_number in range(12):
        for _ in range(7):
            await flood.turn(GROUP)
            times.append(clock.now() - start)
        clock.advance(5.0 * (round_number % 3))  # irregular quiet spells refill the burst

    assert most_in_any_window(times, 60.0) <= 20


async def test_chats_have_separate_budgets(flood: FloodScheduler, clock: FakeClock) -> None:
    await call_times(flood, clock, PRIVATE, 2)  # PRIVATE's burst is spent

    assert await call_times(flood, clock, OTHER_PRIVATE, 2) == approx([0, 0])
    assert await call_times(flood, clock, GROUP, 2) == approx([0, 0])


# --- 429 -----------------------------------------------------------------------------------------


async def test_penalize_blocks_that_chat_for_the_window_while_others_go_on(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    penalized_at = clock.now()
    granted: dict[int, float] = {}

    async def call(chat_id: int) -> None:
        await flood.turn(chat_id)
        granted[chat_id] = clock.now() - penalized_at

    flood.penalize(PRIVATE, 5)

    assert flood.blocked_for(PRIVATE) == approx(5.0)
    assert flood.blocked_for(OTHER_PRIVATE) == 0.0
    await asyncio.gather(call(PRIVATE), call(OTHER_PRIVATE), call(GROUP))

    assert granted[OTHER_PRIVATE] == 0.0, "another chat is not held back at all"
    assert granted[GROUP] == 0.0
    assert granted[PRIVATE] >= 5.0, "nothing at all may be sent inside the retry_after window"
    # The window is not a ban: the chat resumes at its normal pace right after it.
    assert granted[PRIVATE] <= 5.0 + 1.0
    assert flood.blocked_for(PRIVATE) == 0.0


async def test_after_a_429_window_the_chat_gets_no_burst(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    flood.penalize(PRIVATE, 5)

    times = await call_times(flood, clock, PRIVATE, 3)

    assert times[0] >= 5.0
    assert times[1] - times[0] == approx(1.0), "one call per second, no catch-up burst"
    assert times[2] - times[1] == approx(1.0)


async def test_penalize_never_shortens_an_open_window(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    flood.penalize(GROUP, 30)
    flood.penalize(GROUP, 5)  # a later, shorter 429 (another call) does not lift the first one

    assert flood.blocked_for(GROUP) == approx(30.0)
    assert (await call_times(flood, clock, GROUP, 1))[0] >= 30.0


async def test_429s_in_several_chats_at_once_pause_the_whole_bot(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    for chat_id in (1, 2, 3):
        flood.penalize(chat_id, 4)

    assert flood.blocked_for(OTHER_PRIVATE) == approx(4.0)
    assert (await call_times(flood, clock, OTHER_PRIVATE, 1))[0] >= 4.0


async def test_429s_spread_out_in_time_do_not_pause_the_bot(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    for chat_id in (1, 2, 3):
        flood.penalize(chat_id, 4)
        clock.advance(2.0)

    assert flood.blocked_for(OTHER_PRIVATE) == 0.0
    assert await call_times(flood, clock, OTHER_PRIVATE, 1) == [0.0]


# --- order ---------------------------------------------------------------------------------------


async def test_waiters_of_one_chat_are_served_in_fifo_order(flood: FloodScheduler) -> None:
    served: list[int] = []

    async def waiter(number: int) -> None:
        await flood.turn(PRIVATE)
        served.append(number)

    await asyncio.gather(*(waiter(n) for n in range(8)))

    assert served == list(range(8))


async def test_a_penalized_chat_keeps_its_waiters_in_order(flood: FloodScheduler) -> None:
    served: list[int] = []

    async def waiter(number: int) -> None:
        await flood.turn(PRIVATE)
        served.append(number)

    first = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    flood.penalize(PRIVATE, 3)
    later = [asyncio.create_task(waiter(n)) for n in range(3, 6)]
    await asyncio.gather(*first, *later)

    assert served == list(range(6))


async def test_a_cancelled_waiter_does_not_hold_up_the_others(
    flood: FloodScheduler, clock: FakeClock
) -> None:
    served: dict[int, float] = {}
    start = clock.now()

    async def waiter(number: int) -> None:
        await flood.turn(PRIVATE)
        served[number] = clock.now() - start

    tasks = [asyncio.create_task(waiter(n)) for n in range(4)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert list(served) == [0, 1, 3]
    # The cancelled turn spent nothing: waiter 3 goes in the third slot (after the burst).
    assert served[3] == approx(1.0)


async def test_bot_wide_budget_serves_first_texts_before_updates_before_typing(
    clock: FakeClock,
) -> None:
    flood = FloodScheduler(clock, FloodLimits(bot_per_second=2.0))
    served: list[int] = []

    async def waiter(chat_id: int, priority: Priority) -> None:
        await flood.turn(chat_id, priority)
        served.append(chat_id)

    try:
        await asyncio.gather(
            waiter(1, Priority.BACKGROUND),
            waiter(2, Priority.UPDATE),
            waiter(3, Priority.URGENT),
            waiter(4, Priority.UPDATE),
            waiter(5, Priority.URGENT),
        )
    finally:
        await flood.aclose()

    assert served == [3, 5, 2, 4, 1]


async def test_a_chats_typing_turn_never_holds_back_its_first_text(clock: FakeClock) -> None:
    """Within a chat the most urgent turn goes first: with the bot-wide budget short, a typing
    indicator queued before the first text would otherwise starve it behind other chats."""
    flood = FloodScheduler(clock, FloodLimits(bot_per_second=2.0))
    served: list[str] = []

    async def waiter(chat_id: int, priority: Priority, name: str) -> None:
        await flood.turn(chat_id, priority)
        served.append(name)

    try:
        await asyncio.gather(
            waiter(1, Priority.BACKGROUND, "typing in 1"),
            waiter(1, Priority.URGENT, "first text in 1"),
            *(waiter(chat, Priority.UPDATE, f"update in {chat}") for chat in (2, 3, 4)),
        )
    finally:
        await flood.aclose()

    assert served[0] == "first text in 1", served
    assert served[-1] == "typing in 1", served


async def test_a_waiting_update_becomes_urgent_when_its_final_state_arrives(
    clock: FakeClock,
) -> None:
    flood = FloodScheduler(clock, FloodLimits(bot_per_second=2.0))
    final_arrives_at = clock.now() + 0.75
    served: list[int] = []

    def stream_priority() -> Priority:
        return Priority.URGENT if clock.now() >= final_arrives_at else Priority.UPDATE

    async def waiter(chat_id: int, priority: Priority | Callable[[], Priority]) -> None:
        await flood.turn(chat_id, priority)
        served.append(chat_id)

    try:
        await asyncio.gather(
            *(waiter(chat_id, Priority.UPDATE) for chat_id in (1, 2, 3, 4)),
            waiter(9, stream_priority),
        )
    finally:
        await flood.aclose()

    assert served.index(9) < served.index(4), served
    assert served.index(9) <= 2, served


async def test_bot_wide_budget_holds_across_chats(clock: FakeClock) -> None:
    flood = FloodScheduler(clock)  # Telegram's ~30 calls per second for the whole bot
    times: list[float] = []
    start = clock.now()

    async def one_call(chat_id: int) -> None:
        await flood.turn(chat_id)
        times.append(clock.now() - start)

    try:
        await asyncio.gather(*(one_call(chat_id) for chat_id in range(1, 121)))
    finally:
        await flood.aclose()

    times.sort()
    assert most_in_any_window(times, 1.005) <= 30, "Telegram's 30 a second"
    # A window's calls go at once, as Telegram allows: 120 first texts are on screen after
    # three windows, not spread over 4 s. (Each counts from its answer: here, at once.)
    assert times.count(0.0) == 30
    assert max(times) == pytest.approx(3 * 1.005), "and not slower than that"


# --- pruning -------------------------------------------------------------------------------------


class NeverPrunes(FloodScheduler):
    _PRUNE_EVERY = 10**12


async def run_workload(flood: FloodScheduler, clock: FakeClock) -> list[tuple[int, float]]:
    """Enough chats once each to trigger pruning, then a mixed workload; when each call went."""
    flood.penalize(GROUP, 100)  # must survive pruning
    await call_times(flood, clock, PRIVATE, 2)  # spent burst
    for chat_id in range(10_000, 10_000 + 1021):
        await flood.turn(chat_id)
    clock.advance(1.5)  # PRIVATE has 1.5 calls again: not full, so it must be remembered
    await flood.turn(20_000)  # the 1024th call

    seen: list[tuple[int, float]] = []
    start = clock.now()
    for chat_id in (PRIVATE, 10_000, GROUP, 10_500, PRIVATE, 20_000):
        for _ in range(3):
            await flood.turn(chat_id)
            seen.append((chat_id, clock.now() - start))
    return seen


async def test_idle_chats_are_pruned_without_changing_behaviour() -> None:
    pruning_clock, reference_clock = FakeClock(), FakeClock()
    pruning = FloodScheduler(pruning_clock, NO_BOT_LIMIT)
    reference = NeverPrunes(reference_clock, NO_BOT_LIMIT)
    try:
        pruned_calls = await run_workload(pruning, pruning_clock)
        reference_calls = await run_workload(reference, reference_clock)
    finally:
        await pruning.aclose()
        await reference.aclose()

    assert [chat for chat, _ in pruned_calls] == [chat for chat, _ in reference_calls]
    assert [t for _, t in pruned_calls] == approx([t for _, t in reference_calls])
    group_first = next(t for chat, t in pruned_calls if chat == GROUP)
    assert group_first >= 100 - 1.5 - 1e-5, "the penalized group still waited out its window"


async def test_pruning_forgets_idle_chats(flood: FloodScheduler, clock: FakeClock) -> None:
    flood.penalize(GROUP, 100)
    for chat_id in range(10_000, 10_000 + 1023):
        await flood.turn(chat_id)
    clock.advance(10)  # every chat is idle and full again; GROUP is still blocked

    await flood.turn(20_000)  # the 1024th call prunes

    tracked = len(flood._chats)
    assert tracked <= 3, f"{tracked} chats still tracked after pruning"
    assert flood.blocked_for(GROUP) == approx(90.0)
