"""`BotWideMeter`: calls made straight through aiogram spend the bot-wide budget too.

A real aiogram `Bot` over the fake Bot API, which counts every call but `getUpdates` in the
bot's 30 a second, as Telegram does. Time is the flood tests' `FakeClock`: exact and instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.types import BotCommand

from bot.streaming.meter import BotWideMeter
from bot.streaming.scheduler import FloodLimits, FloodScheduler
from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram, FakeTelegramSession, RateLimit
from tests.fakes.telegram import FloodLimits as FakeLimits
from tests.streaming.test_flood import FakeClock

MENU = [BotCommand(command="start", description="Start")]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telegram(clock: FakeClock) -> FakeTelegram:
    return FakeTelegram(clock=clock.now, limits=FakeLimits(bot_wide=RateLimit(30, 1.0)))


@pytest.fixture
async def flood(clock: FakeClock) -> AsyncIterator[FloodScheduler]:
    scheduler = FloodScheduler(clock, FloodLimits(bot_per_second=30.0))
    yield scheduler
    await scheduler.aclose()


async def start_up_then_answer(
    telegram: FakeTelegram, flood: FloodScheduler, *, metered: bool
) -> list[int]:
    """Six menu calls at start-up, then the first texts of 30 new answers at once; returns
    the statuses of the first texts."""
    bot = Bot(DEFAULT_TOKEN, session=FakeTelegramSession(telegram))
    if metered:
        bot.session.middleware(BotWideMeter(flood))

    async def first_text(chat_id: int) -> int:
        async with flood.call(chat_id):
            try:
                await bot.send_message(chat_id, "Hello")
            except Exception:
                return 429
        return 200

    try:
        for _ in range(6):
            await bot.set_my_commands(MENU)
        return list(await asyncio.gather(*(first_text(1 + n) for n in range(30))))
    finally:
        await bot.session.close()


async def test_start_up_calls_and_first_texts_share_the_bots_second(
    telegram: FakeTelegram, flood: FloodScheduler, clock: FakeClock
) -> None:
    start = clock.now()
    statuses = await start_up_then_answer(telegram, flood, metered=True)

    assert statuses == [200] * 30
    sends = sorted(r.time - start for r in telegram.requests if r.method == "sendMessage")
    assert sends.count(0.0) == 24, "the menu took 6 of the window's 30 calls"
    assert sends[24:] == pytest.approx([1.005] * 6)


async def test_unmetered_the_same_calls_get_429s(
    telegram: FakeTelegram, flood: FloodScheduler
) -> None:
    # What the meter prevents (the benchmark saw it: 3-7 429s at 100 answers).
    statuses = await start_up_then_answer(telegram, flood, metered=False)

    assert statuses.count(429) == 6


async def test_calls_inside_a_turn_are_not_counted_twice(
    telegram: FakeTelegram, flood: FloodScheduler, clock: FakeClock
) -> None:
    bot = Bot(DEFAULT_TOKEN, session=FakeTelegramSession(telegram))
    bot.session.middleware(BotWideMeter(flood))
    start = clock.now()

    async def first_text(chat_id: int) -> None:
        async with flood.call(chat_id):
            await bot.send_message(chat_id, "Hello")

    try:
        await asyncio.gather(*(first_text(1 + n) for n in range(30)))
    finally:
        await bot.session.close()

    assert [r.time - start for r in telegram.requests] == [0.0] * 30, "all 30 at once"
