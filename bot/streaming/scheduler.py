"""The flood budget: who may call Telegram next, for every chat of the bot, fairly.

Three limits apply at once (DESIGN.md §3): about one call per second in a private chat (short
bursts allowed), 20 per minute in a group, about 30 per second for the whole bot — the last one
shared by every process of the bot through Redis (`GlobalBudget`). Every outbound call to a
chat waits for its `turn()`; none bypasses the scheduler, because independent throttles that
are each sized to the limit add up past it.

When the bot-wide budget is the bottleneck (hundreds of answers at once), the order matters:
`URGENT` turns (an answer's first text, an answer's final state, notices) go before `UPDATE`
turns (intermediate states of long answers), which go before `BACKGROUND` ones (typing).
Within a class the turn waiting longest goes first. A waiting stream never queues twice: it
holds one turn and sends its newest state when granted, so intermediate updates coalesce.

After a 429 nothing is sent to that chat — or, when many chats are hit at once, to any chat —
until `retry_after` has passed: Telegram lengthens the penalty of a bot that keeps calling.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from redis.exceptions import RedisError

from bot.streaming.clock import Clock
from storage import BotBudgetStore

logger = logging.getLogger("relaygram.flood")


class Priority(IntEnum):
    URGENT = 0  # first text of an answer, final state, notices, button updates
    UPDATE = 1  # intermediate state of an answer already on screen
    BACKGROUND = 2  # typing indicator


@dataclass(frozen=True, slots=True)
class Pace:
    per_second: float
    burst: float


@dataclass(frozen=True, slots=True)
class FloodLimits:
    # 1/s with a burst of 2 lets the typing action and the first text go out back to back.
    private: Pace = Pace(per_second=1.0, burst=2.0)
    # 18/min plus a burst of 2 never exceeds 20 in any minute.
    group: Pace = Pace(per_second=18 / 60, burst=2.0)
    # Telegram's ~30/s for the whole bot; see GlobalBudget implementations for the headroom.
    bot_per_second: float = 30.0


class GlobalBudget(Protocol):
    """The bot-wide budget, possibly shared with other processes of the same bot."""

    async def acquire(self) -> None:
        """Wait for, and spend, one bot-wide call."""
        ...


class LocalBudget:
    """A bot-wide budget for a single process: one call per 1/rate seconds, no bursts."""

    def __init__(self, clock: Clock, per_second: float) -> None:
        self._clock = clock
        self._interval = 1.0 / per_second
        self._next = 0.0

    async def acquire(self) -> None:
        now = self._clock.now()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._clock.sleep(slot - now)


class SharedBudget:
    """The bot-wide budget shared through Redis by every process of one bot.

    Wall-clock time is cut into slots of 1/rate seconds, and each slot is claimed by one call
    of one process (`BotBudgetStore`). The rate used is `HEADROOM` below the configured one, so
    network jitter between a claimed slot and the request reaching Telegram cannot push any
    one-second window over the limit. If Redis fails, this process falls back to pacing itself
    alone (logged), rather than stopping all output.
    """

    HEADROOM = 0.9

    def __init__(self, store: BotBudgetStore, bot_id: int, clock: Clock, per_second: float) -> None:
        self._store = store
        self._bot_id = bot_id
        self._clock = clock
        self._width = 1.0 / (per_second * self.HEADROOM)
        self._next_slot = 0
        self._failing = False

    async def acquire(self) -> None:
        try:
            slot = await self._claim()
        except RedisError as exc:
            if not self._failing:
                logger.warning("shared Telegram budget unavailable (%s); pacing locally", exc)
                self._failing = True
            # Pace alone on the same slot schedule, so no slot is used twice by this process
            # when Redis comes back (other processes may still overlap: Redis is down).
            slot = max(int(self._clock.wall() / self._width), self._next_slot)
            self._next_slot = slot + 1
        else:
            if self._failing:
                logger.info("shared Telegram budget available again")
                self._failing = False
        delay = slot * self._width - self._clock.wall()
        if delay > 0:
            await self._clock.sleep(delay)

    async def _claim(self) -> int:
        slot = max(int(self._clock.wall() / self._width), self._next_slot)
        while not await self._store.claim(self._bot_id, slot):
            slot += 1  # taken by another process: the next one may be free
        self._next_slot = slot + 1
        return slot


@dataclass(slots=True)
class _Chat:
    pace: Pace
    tokens: float
    updated: float
    blocked_until: float = 0.0
    waiters: deque[_Turn] = field(default_factory=deque)


@dataclass(slots=True)
class _Turn:
    chat_id: int
    priority: Callable[[], Priority]
    since: float
    order: int
    granted: asyncio.Future[None]


class FloodScheduler:
    """Grants calls to chats within every limit; one dispatcher task per process."""

    # A bot-wide pause starts when this many chats get a 429 within BOT_PENALTY_WINDOW seconds:
    # Telegram's answer does not say whether a 429 was for the chat or for the bot.
    BOT_PENALTY_CHATS = 3
    BOT_PENALTY_WINDOW = 1.0
    _PRUNE_EVERY = 1024

    def __init__(
        self,
        clock: Clock,
        limits: FloodLimits | None = None,
        budget: GlobalBudget | None = None,
    ) -> None:
        self._clock = clock
        self.limits = limits or FloodLimits()
        self._budget = budget or LocalBudget(clock, self.limits.bot_per_second)
        self._chats: dict[int, _Chat] = {}
        self._waiting: set[int] = set()  # chats with at least one turn queued
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._bot_blocked_until = 0.0
        self._recent_penalties: deque[tuple[float, int]] = deque()
        self._granted = 0

    # --- what senders call ------------------------------------------------------------------------

    async def turn(
        self, chat_id: int, priority: Priority | Callable[[], Priority] = Priority.URGENT
    ) -> None:
        """Wait until a call to this chat is allowed; the budget is spent when this returns.

        `priority` may be a callable, read each time the scheduler chooses: a stream waiting
        with an intermediate update becomes URGENT when its final state arrives.
        """
        chat = self._chat(chat_id)
        rank = priority if callable(priority) else _constant(priority)
        turn = _Turn(
            chat_id,
            rank,
            self._clock.now(),
            next(self._order),
            asyncio.get_running_loop().create_future(),
        )
        chat.waiters.append(turn)
        self._waiting.add(chat_id)
        self._ensure_dispatcher()
        self._wake.set()
        try:
            await turn.granted
        except asyncio.CancelledError:
            if turn in chat.waiters:
                chat.waiters.remove(turn)
                if not chat.waiters:
                    self._waiting.discard(chat_id)
            raise

    def penalize(self, chat_id: int, retry_after: float) -> None:
        """Telegram said 429 for this chat: send it nothing for `retry_after` seconds."""
        now = self._clock.now()
        chat = self._chat(chat_id)
        chat.blocked_until = max(chat.blocked_until, now + retry_after)
        # One call is allowed the moment the window ends (Telegram accepts it then), and the
        # pace resumes from there: no catch-up burst.
        chat.tokens = 1.0
        chat.updated = chat.blocked_until
        self._recent_penalties.append((now, chat_id))
        while (
            self._recent_penalties and self._recent_penalties[0][0] < now - self.BOT_PENALTY_WINDOW
        ):
            self._recent_penalties.popleft()
        if len({c for _, c in self._recent_penalties}) >= self.BOT_PENALTY_CHATS:
            if self._bot_blocked_until < now + retry_after:
                logger.warning(
                    "429 in several chats at once: pausing the whole bot %ss", retry_after
                )
            self._bot_blocked_until = max(self._bot_blocked_until, now + retry_after)
        self._wake.set()

    def blocked_for(self, chat_id: int) -> float:
        chat = self._chats.get(chat_id)
        now = self._clock.now()
        until = max(self._bot_blocked_until, chat.blocked_until if chat else 0.0)
        return max(0.0, until - now)

    def pace_for(self, chat_id: int) -> Pace:
        # Private chats have positive ids; groups, supergroups and channels negative ones.
        return self.limits.private if chat_id > 0 else self.limits.group

    async def aclose(self) -> None:
        task, self._dispatcher = self._dispatcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- the dispatcher ---------------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="flood-scheduler")

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            best, next_ready = self._pick()
            if best is None:
                await self._idle(next_ready)
                continue
            await self._budget.acquire()
            # Waiting for the bot-wide budget may take a while: choose again with what is
            # waiting now (a final state may have arrived meanwhile).
            best, _ = self._pick()
            if best is None:
                continue  # the spent bot-wide call is lost; rare (a waiter was cancelled)
            self._grant(best)

    async def _idle(self, until: float | None) -> None:
        if until is None:
            await self._wake.wait()
        else:
            await self._clock.wait(self._wake, until - self._clock.now())

    def _pick(self) -> tuple[_Turn | None, float | None]:
        """The best turn that may go now, and else when the earliest one may."""
        now = self._clock.now()
        if now < self._bot_blocked_until:
            return None, self._bot_blocked_until
        best: _Turn | None = None
        best_key: tuple[int, float, int] | None = None
        next_ready: float | None = None
        for chat_id in self._waiting:
            chat = self._chats[chat_id]
            ready_at = self._ready_at(chat, now)
            if ready_at > now:
                next_ready = ready_at if next_ready is None else min(next_ready, ready_at)
                continue
            # The chat's most urgent turn, not its oldest: a typing indicator queued first must
            # never hold back the answer's first text behind it.
            for turn in chat.waiters:
                key = (int(turn.priority()), turn.since, turn.order)
                if best_key is None or key < best_key:
                    best, best_key = turn, key
        return best, next_ready

    def _ready_at(self, chat: _Chat, now: float) -> float:
        if now < chat.blocked_until:
            return chat.blocked_until
        self._refill(chat, now)
        if chat.tokens >= 1.0:
            return now
        return now + (1.0 - chat.tokens) / chat.pace.per_second

    def _grant(self, turn: _Turn) -> None:
        chat = self._chats[turn.chat_id]
        chat.waiters.remove(turn)
        if not chat.waiters:
            self._waiting.discard(turn.chat_id)
        chat.tokens -= 1.0
        if not turn.granted.done():
            turn.granted.set_result(None)
        self._granted += 1
        if self._granted % self._PRUNE_EVERY == 0:
            self._prune()

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            pace = self.pace_for(chat_id)
            chat = _Chat(pace=pace, tokens=pace.burst, updated=self._clock.now())
            self._chats[chat_id] = chat
        return chat

    @staticmethod
    def _refill(chat: _Chat, now: float) -> None:
        if now > chat.updated:
            gained = (now - chat.updated) * chat.pace.per_second
            chat.tokens = min(chat.pace.burst, chat.tokens + gained)
            chat.updated = now

    def _prune(self) -> None:
        """Forget idle chats whose budget is full again: they behave exactly like new ones."""
        now = self._clock.now()
        for chat_id, chat in list(self._chats.items()):
            self._refill(chat, now)
            if not chat.waiters and chat.tokens >= chat.pace.burst and now >= chat.blocked_until:
                del self._chats[chat_id]


def _constant(priority: Priority) -> Callable[[], Priority]:
    return lambda: priority
