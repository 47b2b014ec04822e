"""One flood budget per chat, spent by every outbound call to that chat.

Telegram allows about one message per second in a private chat (short bursts tolerated) and 20
per minute in a group, and answers 429 with `retry_after` beyond that. Independent throttles
per code path (typing, edits, notices) add up past the limit, so every call that targets a chat
— sends, edits, chat actions, deletions — goes through `FloodGate.acquire(chat_id)`.

After a 429 nothing at all is sent to that chat until `retry_after` has passed: Telegram
lengthens the penalty of a bot that keeps calling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.streaming.clock import Clock


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


@dataclass(slots=True)
class _Bucket:
    pace: Pace
    tokens: float
    updated: float
    blocked_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FloodGate:
    """Per-chat token buckets with 429 penalty windows; waiters of one chat go in FIFO order."""

    _PRUNE_EVERY = 1024

    def __init__(self, clock: Clock, limits: FloodLimits | None = None) -> None:
        self._clock = clock
        self._limits = limits or FloodLimits()
        self._buckets: dict[int, _Bucket] = {}
        self._acquired = 0

    def pace_for(self, chat_id: int) -> Pace:
        # Private chats have positive ids; groups, supergroups and channels negative ones.
        return self._limits.private if chat_id > 0 else self._limits.group

    async def acquire(self, chat_id: int) -> None:
        """Wait until a call to this chat is allowed, and spend the budget for it."""
        bucket = self._bucket(chat_id)
        async with bucket.lock:
            while True:
                now = self._clock.now()
                if now < bucket.blocked_until:
                    await self._clock.sleep(bucket.blocked_until - now)
                    continue
                self._refill(bucket, now)
                if bucket.tokens >= 1.0:
                    bucket.tokens -= 1.0
                    break
                await self._clock.sleep((1.0 - bucket.tokens) / bucket.pace.per_second)
        self._acquired += 1
        if self._acquired % self._PRUNE_EVERY == 0:
            self._prune()

    def penalize(self, chat_id: int, retry_after: float) -> None:
        """Telegram said 429: send nothing to this chat for `retry_after` seconds."""
        bucket = self._bucket(chat_id)
        now = self._clock.now()
        bucket.blocked_until = max(bucket.blocked_until, now + retry_after)
        bucket.tokens = 0.0
        bucket.updated = max(now, bucket.blocked_until)

    def blocked_for(self, chat_id: int) -> float:
        bucket = self._buckets.get(chat_id)
        if bucket is None:
            return 0.0
        return max(0.0, bucket.blocked_until - self._clock.now())

    def _bucket(self, chat_id: int) -> _Bucket:
        bucket = self._buckets.get(chat_id)
        if bucket is None:
            pace = self.pace_for(chat_id)
            bucket = _Bucket(pace=pace, tokens=pace.burst, updated=self._clock.now())
            self._buckets[chat_id] = bucket
        return bucket

    @staticmethod
    def _refill(bucket: _Bucket, now: float) -> None:
        if now > bucket.updated:
            gained = (now - bucket.updated) * bucket.pace.per_second
            bucket.tokens = min(bucket.pace.burst, bucket.tokens + gained)
            bucket.updated = now

    def _prune(self) -> None:
        """Forget chats whose bucket is full again and idle: they behave exactly like new ones."""
        now = self._clock.now()
        for chat_id, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            idle = bucket.tokens >= bucket.pace.burst and now >= bucket.blocked_until
            if idle and not bucket.lock.locked():
                del self._buckets[chat_id]
