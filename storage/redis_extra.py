"""More stores of `storage.base` in Redis: kept history, chat preferences, rate budgets, stats.

Same conventions as `storage.redis_store` (clients with ``decode_responses=True``; bytes are
decoded as UTF-8): records are JSON objects with a schema version ``"v"``; a stored value that
cannot be decoded is skipped (or read as None) with a warning, never raised.

Expiry. A kept history lives `HISTORY_TTL` after its last `append`. Chat preferences never
expire (an operator's choice must not silently revert). A user's rate budget expires one window
after the last counted message. Stats samples are dropped `STATS_RETENTION` after they were
recorded (trimmed on every write) and each sorted set holds at most `STATS_MAX_SAMPLES`, the
newest; the whole key expires `STATS_TTL` after the last write.

Atomicity. Every write that changes several things (push + trim + expire, add + trim + expire)
is one MULTI/EXEC. `RedisRateLimiter.hit` checks the budget and counts the message under
WATCH/MULTI/EXEC (no Lua: the embedded fakeredis store has none without extra packages).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import secrets
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from redis.asyncio import Redis

from storage.base import (
    CHAT_MODES,
    HISTORY_ROLES,
    OUTCOMES,
    RATINGS,
    AgentStats,
    ChatPrefs,
    ChatScope,
)
from storage.keys import KeySpace
from storage.redis_store import CorruptValue, _check_ttl, _load, _str, _text

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_DAY: Final = 24 * 60 * 60
HISTORY_TTL: Final = 90 * _DAY  # seconds; refreshed on every append
STATS_RETENTION: Final = 30 * _DAY  # seconds; older samples are trimmed on every write
STATS_TTL: Final = 31 * _DAY  # seconds; refreshed on every write
STATS_MAX_SAMPLES: Final = 100_000  # per sorted set; the newest are kept

HISTORY_SCHEMA: Final = 1
STATS_SCHEMA: Final = 1

# How often `hit` retries when another client changed the user's budget meanwhile. Only a
# counted message writes, so a hit is retried at most once per message counted concurrently.
_MIN_WAIT: Final = 0.001  # seconds; a refused message never reports "write again now"

_PREF_FIELDS: Final = ("agent", "mode", "language")


def _compact(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _duration(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return value


def _score(value: float, *, exclusive: bool = False) -> str:
    """A sorted-set score bound (``repr`` round-trips a float exactly)."""
    return f"({value!r}" if exclusive else repr(value)


def _number(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorruptValue(f"{name!r} is not a number")
    return float(value)


def _opt_number(data: Mapping[str, Any], name: str) -> float | None:
    return None if data.get(name) is None else _number(data, name)


def _decode_all(key: str, raws: Sequence[bytes | str], decode: Callable[[str], _T]) -> list[_T]:
    """Decode every value; unreadable ones are skipped with one warning for the key."""
    decoded: list[_T] = []
    skipped = 0
    first_reason = ""
    for raw in raws:
        try:
            decoded.append(decode(_text(raw) or ""))
        except CorruptValue as exc:
            skipped += 1
            first_reason = first_reason or str(exc)
    if skipped:
        logger.warning(
            "ignoring %d unreadable value(s) at Redis key %s: %s", skipped, key, first_reason
        )
    return decoded


# --- records ----------------------------------------------------------------------------------


def encode_turn(role: str, content: str) -> str:
    if role not in HISTORY_ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {HISTORY_ROLES}")
    if not isinstance(content, str):
        raise TypeError(f"turn content must be a string, got {type(content).__name__}")
    return _compact({"v": HISTORY_SCHEMA, "role": role, "content": content})


def decode_turn(raw: str) -> tuple[str, str]:
    """Decode a stored history turn; raises `CorruptValue`."""
    data = _load(raw, HISTORY_SCHEMA)
    role = _str(data, "role")
    if role not in HISTORY_ROLES:
        raise CorruptValue(f"unknown role {role!r}")
    return role, _str(data, "content")


def encode_answer_sample(
    sample_id: str, outcome: str, first_text_s: float | None, total_s: float
) -> str:
    """A stats sample: unique id, outcome ("o"), first-text ("f") and total ("t") seconds."""
    return _compact(
        {"v": STATS_SCHEMA, "id": sample_id, "o": outcome, "f": first_text_s, "t": total_s}
    )


def decode_answer_sample(raw: str) -> tuple[str, float | None, float]:
    """Decode a stored answer sample to (outcome, first_text_s, total_s); raises `CorruptValue`."""
    data = _load(raw, STATS_SCHEMA)
    outcome = _str(data, "o")
    if outcome not in OUTCOMES:
        raise CorruptValue(f"unknown outcome {outcome!r}")
    return outcome, _opt_number(data, "f"), _number(data, "t")


def encode_rating_event(event_id: str, sign: str, rating: str) -> str:
    """A signed rating event: ``"e"`` is ``+like``, ``-like``, ``+dislike`` or ``-dislike``."""
    return _compact({"v": STATS_SCHEMA, "id": event_id, "e": f"{sign}{rating}"})


def decode_rating_event(raw: str) -> tuple[int, str]:
    """Decode a stored rating event to (+1 or -1, rating); raises `CorruptValue`."""
    data = _load(raw, STATS_SCHEMA)
    event = _str(data, "e")
    sign, rating = event[:1], event[1:]
    if sign not in ("+", "-") or rating not in RATINGS:
        raise CorruptValue(f"unknown rating event {event!r}")
    return (1 if sign == "+" else -1), rating


# --- stores -----------------------------------------------------------------------------------


class RedisHistoryStore:
    """`HistoryStore`: a Redis list of JSON turns per (scope, agent), trimmed to the newest."""

    __slots__ = ("_keys", "_redis", "_ttl")

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: int = HISTORY_TTL) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = _check_ttl(ttl)

    async def get(self, scope: ChatScope, agent: str) -> list[tuple[str, str]]:
        """The kept turns, oldest first; an unreadable turn is skipped with a warning."""
        key = self._keys.history(scope, agent)
        return _decode_all(key, await self._redis.lrange(key, 0, -1), decode_turn)

    async def append(
        self, scope: ChatScope, agent: str, turns: Sequence[tuple[str, str]], keep: int
    ) -> None:
        """Append `turns`, keep the newest `keep` and renew the TTL, in one MULTI/EXEC.

        `keep` counts turns, not exchanges: pass an even number to keep whole exchanges.
        An unknown role raises `ValueError` before anything is written.
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        payloads = [encode_turn(role, content) for role, content in turns]
        if not payloads:
            return
        key = self._keys.history(scope, agent)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *payloads)
            pipe.ltrim(key, -keep, -1)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def clear(self, scope: ChatScope, agent: str) -> None:
        await self._redis.delete(self._keys.history(scope, agent))


class RedisChatPrefsStore:
    """`ChatPrefsStore`: one hash per scope with optional fields agent, mode and language.

    No TTL: an operator's choice must not silently expire. The fields are plain strings (the
    key's ``v1`` segment versions their meaning); fields this code does not know are ignored,
    and a field with an unusable value reads as None with a warning.
    """

    __slots__ = ("_keys", "_redis")

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, scope: ChatScope) -> ChatPrefs:
        key = self._keys.chat_prefs(scope)
        values = await self._redis.hmget(key, list(_PREF_FIELDS))
        agent, mode, language = (_text(value) for value in values)
        if mode is not None and mode not in CHAT_MODES:
            logger.warning("ignoring unknown chat mode %r at Redis key %s", mode, key)
            mode = None
        for name, value in (("agent", agent), ("language", language)):
            if value == "":
                logger.warning("ignoring empty %s at Redis key %s", name, key)
        return ChatPrefs(agent=agent or None, mode=mode, language=language or None)

    async def set_agent(self, scope: ChatScope, name: str | None) -> None:
        if name is not None and not name:
            raise ValueError("agent name must not be empty (use None for the default)")
        await self._set(scope, "agent", name)

    async def set_mode(self, scope: ChatScope, mode: str | None) -> None:
        if mode is not None and mode not in CHAT_MODES:
            raise ValueError(f"unknown chat mode {mode!r}; expected one of {CHAT_MODES}")
        await self._set(scope, "mode", mode)

    async def set_language(self, scope: ChatScope, language: str | None) -> None:
        if language is not None and not language:
            raise ValueError("language must not be empty (use None for the default)")
        await self._set(scope, "language", language)

    async def _set(self, scope: ChatScope, field: str, value: str | None) -> None:
        key = self._keys.chat_prefs(scope)
        if value is None:
            await self._redis.hdel(key, field)  # the last field gone deletes the hash
        else:
            await self._redis.hset(key, field, value)


# Atomic for every replica: count the messages in (now - window, +inf); if fewer than the
# limit, forget older ones and count this one. Refused: the score of the counted message whose
# leaving frees the budget (as a string: Redis would truncate a Lua number to an integer).
_HIT_RATE = """
local counted = redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf')
local limit = tonumber(ARGV[3])
if counted >= limit then
  local oldest = redis.call(
    'ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf', 'WITHSCORES', 'LIMIT', counted - limit, 1)
  return oldest[2]
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return ''
"""


class RedisRateLimiter:
    """`RateLimiter`: a sorted set per (bot, user) of counted messages, scored by `now`.

    A message counts while ``now - window < score``. The check and the count are one Lua
    script, so concurrent replicas never let more than `limit` through, in one round trip (a
    WATCH/MULTI/EXEC transaction took three, and retried under contention: with 1,000
    messages arriving at once that was most of the bot's Redis time). The key expires one
    window after the last counted message.
    """

    __slots__ = ("_keys", "_redis", "_script")

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(_HIT_RATE)

    async def hit(self, bot_id: int, user_id: int, limit: int, window: float, now: float) -> float:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not math.isfinite(window) or window <= 0:
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        _finite("now", now)
        member = f"{now!r}:{secrets.token_hex(8)}"  # unique even for equal `now`
        refused_at = await self._script(
            keys=[self._keys.rate(bot_id, user_id)],
            args=[
                repr(now),
                _score(now - window, exclusive=True),
                limit,
                member,
                max(1, math.ceil(window * 1000)),
                _score(now - window),
            ],
        )
        if not refused_at:
            return 0.0
        # Free again when all but limit - 1 of the counted ones left the window.
        return max(float(refused_at) + window - now, _MIN_WAIT)


class RedisStatsStore:
    """`StatsStore`: two sorted sets per (bot, agent), scored by the time of the event.

    ``stats:answers`` holds one JSON sample per answer (a unique id, the outcome, first-text
    and total seconds), so counts and medians come from the same samples for any window.
    ``stats:ratings`` holds signed rating events (a switch like -> dislike is ``-like`` and
    ``+dislike``), so a window's counts are net changes. Every write trims samples older than
    `retention` before the event's time and all but the newest `max_samples`, and renews the
    TTL, in the same MULTI/EXEC as the write.
    """

    __slots__ = ("_keys", "_max_samples", "_redis", "_retention", "_ttl")

    def __init__(
        self,
        redis: Redis,
        keys: KeySpace,
        *,
        retention: int = STATS_RETENTION,
        ttl: int = STATS_TTL,
        max_samples: int = STATS_MAX_SAMPLES,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        self._redis = redis
        self._keys = keys
        self._retention = _check_ttl(retention)
        self._ttl = _check_ttl(ttl)
        self._max_samples = max_samples

    async def record_answer(
        self,
        bot_id: int,
        agent: str,
        *,
        at: float,
        first_text_s: float | None,
        total_s: float,
        outcome: str,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        if first_text_s is not None:
            _duration("first_text_s", first_text_s)
        _duration("total_s", total_s)
        member = encode_answer_sample(secrets.token_hex(8), outcome, first_text_s, total_s)
        await self._add(self._keys.stats_answers(bot_id, agent), [member], _finite("at", at))

    async def record_rating(
        self, bot_id: int, agent: str, *, at: float, old: str | None, new: str | None
    ) -> None:
        for rating in (old, new):
            if rating is not None and rating not in RATINGS:
                raise ValueError(f"unknown rating {rating!r}; expected one of {RATINGS}")
        _finite("at", at)
        if old == new:
            return
        event_id = secrets.token_hex(8)
        members = [
            encode_rating_event(event_id, sign, rating)
            for sign, rating in (("-", old), ("+", new))
            if rating is not None
        ]
        await self._add(self._keys.stats_ratings(bot_id, agent), members, at)

    async def summary(self, bot_id: int, agent: str, *, since: float, until: float) -> AgentStats:
        answers_key = self._keys.stats_answers(bot_id, agent)
        ratings_key = self._keys.stats_ratings(bot_id, agent)
        low, high = _score(_finite("since", since)), _score(_finite("until", until), exclusive=True)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrangebyscore(answers_key, low, high)
            pipe.zrangebyscore(ratings_key, low, high)
            raw_answers, raw_ratings = await pipe.execute()

        samples = _decode_all(answers_key, raw_answers, decode_answer_sample)
        net = dict.fromkeys(RATINGS, 0)
        for sign, rating in _decode_all(ratings_key, raw_ratings, decode_rating_event):
            net[rating] += sign
        likes, dislikes = max(net["like"], 0), max(net["dislike"], 0)
        first_texts = [first for _, first, _ in samples if first is not None]
        totals = [total for _, _, total in samples]
        return AgentStats(
            answers=len(samples),
            errors=sum(1 for outcome, _, _ in samples if outcome == "error"),
            stopped=sum(1 for outcome, _, _ in samples if outcome == "stopped"),
            likes=likes,
            dislikes=dislikes,
            like_ratio=likes / (likes + dislikes) if likes + dislikes else None,
            median_first_text_s=statistics.median(first_texts) if first_texts else None,
            median_total_s=statistics.median(totals) if totals else None,
        )

    async def _add(self, key: str, members: Sequence[str], at: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, dict.fromkeys(members, at))
            pipe.zremrangebyscore(key, "-inf", _score(at - self._retention, exclusive=True))
            pipe.zremrangebyrank(key, 0, -(self._max_samples + 1))
            pipe.expire(key, self._ttl)
            await pipe.execute()


# Atomic for every process: forget calls older than the window, count the rest, record what
# fits. Scores are wall-clock seconds; members only need to be unique (the caller's tag + i).
# Numbers leave Lua as strings, because Redis would truncate a Lua number to an integer.
_TAKE_BUDGET = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, want, tag = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local taken = math.max(0, math.min(want, limit - used))
for i = 1, taken do
  redis.call('ZADD', KEYS[1], now, tag .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000))
local free_at = now
if taken < want then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  free_at = tonumber(oldest[2]) + window
end
return {taken, tostring(free_at)}
"""


class RedisBotBudgetStore:
    """`BotBudgetStore`: a sorted set of the last window's calls, taken by one Lua script.

    A script, not WATCH/MULTI: every process of a busy bot takes from the same key many times a
    second, and optimistic transactions would mostly retry. The key expires two windows after
    the last call, so an idle bot leaves nothing behind.
    """

    __slots__ = ("_keys", "_redis", "_script", "_tags")

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(_TAKE_BUDGET)
        # Members must be unique across processes: a random prefix per store, then a counter.
        self._tags = (f"{secrets.token_hex(6)}:{n}" for n in itertools.count())

    async def take(
        self, bot_id: int, now: float, want: int, limit: int, window: float
    ) -> tuple[list[str], float]:
        if want <= 0:
            return [], now
        tag = next(self._tags)
        taken, free_at = await self._script(
            keys=[self._keys.bot_budget(bot_id)],
            args=[repr(now), repr(window), limit, want, tag],
        )
        return [f"{tag}:{i}" for i in range(1, int(taken) + 1)], float(free_at)

    async def postpone(self, bot_id: int, calls: Sequence[str], to: float) -> None:
        if calls:
            # XX: a call that has already aged out of the window stays out.
            await self._redis.zadd(self._keys.bot_budget(bot_id), dict.fromkeys(calls, to), xx=True)


class RedisNoticeStore:
    """`NoticeStore`: SET NX with an expiry; whoever sets the key first gives the notice."""

    __slots__ = ("_keys", "_redis")

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys

    async def first_time(self, bot_id: int, kind: str, subject: int, ttl: int) -> bool:
        created = await self._redis.set(
            self._keys.notice(bot_id, kind, subject), "1", nx=True, ex=ttl
        )
        return bool(created)
