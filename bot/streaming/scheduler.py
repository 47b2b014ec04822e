"""The flood budget: who may call Telegram next, for every chat of the bot, fairly.

Three limits apply at once (DESIGN.md §3): about one call per second in a private chat (short
bursts allowed), 20 in any minute in a group (`bot.streaming.paces`), about 30 in any second
for the whole bot — the last one shared by every process of the bot through Redis
(`bot.streaming.budget`). Every outbound call to a chat waits for its `turn()`; none bypasses
the scheduler, because independent throttles that are each sized to the limit add up past it.

When the bot-wide budget is the bottleneck (hundreds of answers at once), the order matters:
`URGENT` turns (an answer's first text, an answer's final state, notices) go before `UPDATE`
turns (intermediate states of long answers), which go before `BACKGROUND` ones (typing).
Within a class the turn waiting longest goes first. A waiting stream never queues twice: it
holds one turn and sends its newest state when granted, so intermediate updates coalesce.
Whatever the bot-wide window has room for goes at once, with one Redis call: the first texts
of many new answers appear together, as Telegram allows. Each call counts from when its
answer came back (`call()`; `budget` explains why that makes bursts safe).

After a 429 nothing is sent to that chat — or, when many chats are hit at once, to any chat —
until `retry_after` has passed: Telegram lengthens the penalty of a bot that keeps calling.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from enum import IntEnum

from bot.lean_event import LeanEvent
from bot.streaming.budget import BotWideBudget, BotWindow, SentLog
from bot.streaming.clock import Clock
from bot.streaming.paces import GROUP_CHAT, PRIVATE_CHAT, ChatPace, PaceRule, Unpaced

logger = logging.getLogger("relaygram.flood")


# The "chat" of the calls aimed at no chat (`BotWideMeter`): no Telegram chat has id 0.
BOT_ITSELF = 0


class Priority(IntEnum):
    URGENT = 0  # first text of an answer, final state, notices, button updates
    UPDATE = 1  # intermediate state of an answer already on screen
    BACKGROUND = 2  # typing indicator


@dataclass(frozen=True, slots=True)
class FloodLimits:
    private: PaceRule = PRIVATE_CHAT
    group: PaceRule = GROUP_CHAT
    # Telegram's ~30/s for the whole bot, as whole calls in any rolling window (BotWindow).
    bot_per_second: float = 30.0


@dataclass(slots=True)
class _Chat:
    pace: ChatPace
    blocked_until: float = 0.0
    waiters: list[_Turn] = field(default_factory=list)  # usually one; a deque costs ~760 B
    # When the pace lets an urgent call and an update go: absolute times, which hold until the
    # chat spends a call or restarts (the `ChatPace` contract). The dispatcher looks at every
    # waiting chat in every round, so it asks the pace only after a change. None: ask.
    urgent_at: float | None = None
    update_at: float = 0.0

    def paced(self, now: float) -> float:
        """When an urgent call may go; `update_at` is fresh after this."""
        if self.urgent_at is None:
            self.urgent_at = self.pace.ready_at(now, True)
            self.update_at = self.pace.ready_at(now, False)
        return self.urgent_at


@dataclass(slots=True)
class _Turn:
    chat_id: int
    priority: Callable[[], Priority]
    since: float
    order: int
    granted: asyncio.Future[None]


class _Call:
    """One `FloodScheduler.call()` block. A class, not an `asynccontextmanager`: every writer
    waiting for its turn holds one, and a generator-based block costs ~600 bytes more
    (generator, frame, its weak reference in the loop, the wrapper)."""

    __slots__ = ("_chat_id", "_priority", "_scheduler", "_token", "answered")

    def __init__(
        self,
        scheduler: FloodScheduler,
        chat_id: int,
        priority: Priority | Callable[[], Priority],
    ) -> None:
        self._scheduler = scheduler
        self._chat_id = chat_id
        self._priority = priority
        self._token: Token[_Call | None] | None = None
        self.answered = False

    async def __aenter__(self) -> None:
        outer = _OPEN_CALL.get()
        if outer is not None and not outer.answered:
            # A call made inside another's block (a failed edit resent as a new message):
            # the outer one was answered by now. Left open, its slot would wait on this
            # turn, and a window full of such calls would never free.
            outer.answered = True
            self._scheduler._answered()
        await self._scheduler._wait_turn(self._chat_id, self._priority)
        self._token = _OPEN_CALL.set(self)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _OPEN_CALL.reset(self._token)
            self._token = None
        if not self.answered:
            self.answered = True
            self._scheduler._answered()


# The `FloodScheduler.call()` block the current task is in, if any.
_OPEN_CALL: ContextVar[_Call | None] = ContextVar("relaygram_open_call", default=None)


# A ready turn as the dispatcher ranks it: (priority, since, order, turn); `order` is unique,
# so the turn itself is never compared.
_Candidate = tuple[Priority, float, int, _Turn]


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
        shared: BotWideBudget | None = None,
    ) -> None:
        self._clock = clock
        self.limits = limits or FloodLimits()
        self._window = BotWindow.per_second(self.limits.bot_per_second)
        self._sent = SentLog(self._window)
        self._shared = shared
        self._chats: dict[int, _Chat] = {}
        self._waiting: set[int] = set()  # chats with at least one turn queued
        self._order = itertools.count()
        self._wake = LeanEvent()
        self._dispatcher: asyncio.Task[None] | None = None
        self._bot_blocked_until = 0.0
        self._recent_penalties: deque[tuple[float, int]] = deque()
        self._granted = 0

    # --- what senders call ------------------------------------------------------------------------

    def call(
        self, chat_id: int, priority: Priority | Callable[[], Priority] = Priority.URGENT
    ) -> _Call:
        """Wait until a call to this chat is allowed, then make it inside the block::

            async with flood.call(chat_id, Priority.UPDATE):
                await bot.edit_message_text(...)

        The call counts against the bot-wide budget from when the block ends: Telegram counted
        it at some moment before its answer came back, so from then it is surely in the window.

        `priority` may be a callable, read each time the scheduler chooses: a stream waiting
        with an intermediate update becomes URGENT when its final state arrives.
        """
        return _Call(self, chat_id, priority)

    async def turn(
        self, chat_id: int, priority: Priority | Callable[[], Priority] = Priority.URGENT
    ) -> None:
        """`call()` for a call made and answered the moment the turn comes."""
        async with self.call(chat_id, priority):
            pass

    async def _wait_turn(self, chat_id: int, priority: Priority | Callable[[], Priority]) -> None:
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
            elif turn.granted.done() and not turn.granted.cancelled():
                self._answered()  # granted, then cancelled: count it anyway
            raise

    def _answered(self) -> None:
        now = self._clock.now()
        self._sent.answered(now)
        if self._shared is not None:
            self._shared.answered(now)

    def penalize(self, chat_id: int, retry_after: float) -> None:
        """Telegram said 429 for this chat: send it nothing for `retry_after` seconds."""
        now = self._clock.now()
        chat = self._chat(chat_id)
        chat.blocked_until = max(chat.blocked_until, now + retry_after)
        # Calls resume the moment the window ends (Telegram accepts them then), at the chat's
        # pace and without a catch-up burst.
        chat.pace.restart(chat.blocked_until)
        chat.urgent_at = None
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

    def pace_for(self, chat_id: int) -> PaceRule:
        # Private chats have positive ids; groups, supergroups and channels negative ones.
        if chat_id == BOT_ITSELF:
            return Unpaced()
        return self.limits.private if chat_id > 0 else self.limits.group

    @staticmethod
    def in_call() -> bool:
        """Whether this task is inside a `call()` block that has not been answered."""
        open_call = _OPEN_CALL.get()
        return open_call is not None and not open_call.answered

    async def aclose(self) -> None:
        task, self._dispatcher = self._dispatcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._shared is not None:
            await self._shared.aclose()

    # --- the dispatcher ---------------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="flood-scheduler")

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            if not self._waiting:
                await self._idle(None)
                continue
            # The bot-wide budget first: it needs no look at the chats, and while it is spent
            # nothing can go anyway.
            now = self._clock.now()
            free_at = max(self._sent.free_at(now), self._bot_blocked_until)
            if free_at > now:
                await self._clock.sleep(free_at - now)
                continue
            ready, next_ready = self._ready(now, enough=self._sent.room(now))
            if not ready:
                await self._idle(next_ready)
                continue
            if self._shared is not None:
                taken, retry_at = await self._shared.take(len(ready), self._window)
                if taken == 0:
                    # Other processes filled the window; never spin on a skewed clock.
                    await self._clock.sleep(max(retry_at - self._clock.now(), 0.001))
                    continue
            else:
                taken = len(ready)
            # Choose among all the chats, with what is waiting now (a final state may have
            # arrived during the round trip). A bot-wide call taken for a waiter that left
            # meanwhile is lost; that is rare.
            now = self._clock.now()
            ready, _ = self._ready(now)
            chosen = heapq.nsmallest(taken, ready)
            for *_, turn in chosen:
                self._grant(turn, now)

    async def _idle(self, until: float | None) -> None:
        if until is None:
            await self._wake.wait()
        else:
            await self._clock.wait(self._wake, until - self._clock.now())

    def _ready(
        self, now: float, enough: int | None = None
    ) -> tuple[list[_Candidate], float | None]:
        """Each chat's most urgent turn that may go now, and else when the earliest may.

        With `enough`, it stops once it found that many (to learn whether any may go, not which
        should). This runs about once per granted call over every waiting chat (hundreds under
        load), so it compares cached times and calls each turn's priority once.
        """
        if now < self._bot_blocked_until:
            return [], self._bot_blocked_until
        ready: list[_Candidate] = []
        next_ready = math.inf
        for chat_id in self._waiting:
            chat = self._chats[chat_id]
            if now < chat.blocked_until:
                next_ready = min(next_ready, chat.blocked_until)
                continue
            urgent_at = chat.paced(now)
            if urgent_at > now:
                next_ready = min(next_ready, urgent_at)
                continue
            # The chat's most urgent turn, not its oldest: a typing indicator queued first
            # must never hold back the answer's first text behind it.
            waiters = chat.waiters
            if len(waiters) == 1:
                turn = waiters[0]
                best: _Candidate = (turn.priority(), turn.since, turn.order, turn)
            else:
                best = min((t.priority(), t.since, t.order, t) for t in waiters)
            if best[0] is not Priority.URGENT and chat.update_at > now:
                next_ready = min(next_ready, chat.update_at)
                continue
            ready.append(best)
            if len(ready) == enough:
                break
        return ready, (None if next_ready == math.inf else next_ready)

    def _grant(self, turn: _Turn, now: float) -> None:
        chat = self._chats[turn.chat_id]
        chat.waiters.remove(turn)
        if not chat.waiters:
            self._waiting.discard(turn.chat_id)
        if turn.granted.done():
            return  # its task was cancelled a moment ago and will remove nothing: skip it
        chat.pace.spend(now)
        chat.urgent_at = None
        self._sent.granted(1)
        turn.granted.set_result(None)
        self._granted += 1
        if self._granted % self._PRUNE_EVERY == 0:
            self._prune()

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = _Chat(pace=self.pace_for(chat_id).start(self._clock.now()))
            self._chats[chat_id] = chat
        return chat

    def _prune(self) -> None:
        """Forget idle chats whose budget is full again: they behave exactly like new ones."""
        now = self._clock.now()
        for chat_id, chat in list(self._chats.items()):
            if not chat.waiters and now >= chat.blocked_until and chat.pace.rested(now):
                del self._chats[chat_id]


def _constant(priority: Priority) -> Callable[[], Priority]:
    return lambda: priority
