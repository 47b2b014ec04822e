"""`LeanEvent` behaves as `asyncio.Event` where the bot relies on it: every waiter wakes, a
waiter that gives up leaves the others waiting, and a timed wait says which way it ended."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.lean_event import LeanEvent


async def test_set_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    event = LeanEvent()
    woken: list[int] = []

    async def waiter(number: int) -> None:
        await event.wait()
        woken.append(number)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert woken == []
    assert not event.is_set()
    event.set()
    await asyncio.gather(*tasks)
    assert sorted(woken) == [0, 1, 2]
    assert await asyncio.wait_for(event.wait(), 1) is True


async def test_clear_makes_waiters_wait_again() -> None:
    event = LeanEvent()
    event.set()
    event.clear()
    waiting = asyncio.create_task(event.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    event.set()
    assert await waiting is True


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    event = LeanEvent()
    first = asyncio.create_task(event.wait())
    second = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert first.cancelled()
    assert not second.done()
    event.set()
    assert await second is True


async def test_wait_for_tells_a_timeout_from_a_set() -> None:
    event = LeanEvent()
    assert await event.wait_for(0.01) is False
    later = asyncio.get_running_loop().call_later(0.01, event.set)
    assert await event.wait_for(5) is True
    later.cancel()
    assert await event.wait_for(0) is True  # already set: no wait at all


async def test_a_timed_out_waiter_does_not_block_a_later_set() -> None:
    event = LeanEvent()
    assert await event.wait_for(0) is False
    waiting = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.wait_for(waiting, 1) is True


async def test_waiter_is_a_future_for_asyncio_wait() -> None:
    event = LeanEvent()
    stop = event.waiter()
    work = asyncio.create_task(asyncio.sleep(5))
    asyncio.get_running_loop().call_later(0.01, event.set)
    either: set[asyncio.Future[Any]] = {work, stop}
    done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    assert done == {stop}
    assert stop.result() is True
    work.cancel()
    event.clear()
    given_up = event.waiter()
    given_up.cancel()
    assert event.waiter().done() is False  # a cancelled waiter does not resolve others
    event.set()
    assert (await asyncio.wait_for(event.wait(), 1)) is True
    already = event.waiter()
    assert already.done()
    assert already.result() is True
