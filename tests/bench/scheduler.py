"""CPU cost of the flood scheduler alone, per granted call, with many chats waiting at once.

    python -m tests.bench.scheduler [--chats 10 100 1000] [--grants 20000]

Every chat has a writer that asks for a turn again as soon as it got one (what a long answer
does), with the priorities a real answer has (`URGENT` first text, then `UPDATE`s, every tenth
call a final `URGENT`). Time is virtual: it moves only when the dispatcher sleeps, so the
process's CPU time over the run is the scheduler's own work (plus asyncio's task switching),
and the numbers compare well between two source trees in one session:

    PYTHONPATH=/tmp/other-tree python -m tests.bench.scheduler
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from bot.lean_event import LeanEvent
from bot.streaming.scheduler import FloodScheduler, Priority


class VirtualClock:
    """Jumps to the end of every sleep once every runnable task has run."""

    def __init__(self) -> None:
        self.time = 1_000.0

    def now(self) -> float:
        return self.time

    def wall(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.time += max(0.0, seconds)

    async def wait(self, event: LeanEvent, seconds: float) -> bool:
        await asyncio.sleep(0)
        if event.is_set():
            return True
        self.time += max(0.0, seconds)
        return False


async def run(chats: int, grants: int, group: bool) -> tuple[float, float, int]:
    """CPU seconds, virtual seconds and grants of one run."""
    clock = VirtualClock()
    flood = FloodScheduler(clock)
    done = 0
    stop = asyncio.Event()

    async def writer(chat_id: int) -> None:
        nonlocal done
        calls = 0
        while not stop.is_set():
            priority = Priority.URGENT if calls % 10 == 0 else Priority.UPDATE
            await flood.turn(chat_id, priority)
            calls += 1
            done += 1
            if done >= grants:
                stop.set()

    sign = -1 if group else 1
    started_virtual = clock.now()
    gc.collect()
    started = time.process_time()
    tasks = [asyncio.create_task(writer(sign * (1_000 + i))) for i in range(chats)]
    await stop.wait()
    cpu = time.process_time() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await flood.aclose()
    return cpu, clock.now() - started_virtual, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--grants", type=int, default=20_000)
    args = parser.parse_args()
    print("| chats | kind | grants | virtual s | CPU µs per grant |")
    print("|---:|---|---:|---:|---:|")
    for group in (False, True):
        for chats in args.chats:
            cpu, virtual, done = asyncio.run(run(chats, args.grants, group))
            kind = "group" if group else "private"
            print(f"| {chats} | {kind} | {done} | {virtual:.0f} | {cpu / done * 1e6:.1f} |")


if __name__ == "__main__":
    main()
