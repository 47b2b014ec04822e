"""The stores of `storage.base`, kept in Redis so every replica sees the same state.

All classes take a ``redis.asyncio.Redis`` client constructed with ``decode_responses=True``
(a client returning bytes also works: values are decoded as UTF-8 on the way in).

Encoding. Records (`AnswerRecord`, `RunningAnswer`) are JSON objects with a schema version
field ``"v"``. Compatible changes (a new optional field) keep the version: readers ignore
fields they do not know and use defaults for missing optional ones. An incompatible change
bumps ``"v"`` and the reader keeps decoding every older version it may still find. A value that
is not valid JSON, has an unknown version or fields of the wrong type reads back as None with a
warning log, never as an exception. Conversation refs are opaque strings and stored as they are.

Expiry. Conversation refs live `CONVERSATION_TTL` after their last `set`; answer records
`ANSWER_TTL` after they are saved; a feedback hash `FEEDBACK_TTL` after its last rating; a
running-answer marker `RUN_TTL` after `start` (`update_task` keeps the remaining time), so a
replica that crashes mid-answer never blocks a chat for longer than that.

Atomicity. `RedisAnswerStore.save` writes every key in one MULTI/EXEC; `RedisRunStore`
compares the stored run id and changes the marker under WATCH/MULTI/EXEC (no Lua, so the
embedded fakeredis store behaves exactly like a server).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from storage.base import RATINGS, AnswerRecord, ChatScope, RunningAnswer
from storage.keys import KeySpace

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_DAY: Final = 24 * 60 * 60
CONVERSATION_TTL: Final = 90 * _DAY  # seconds; refreshed on every set
ANSWER_TTL: Final = 90 * _DAY  # seconds
FEEDBACK_TTL: Final = 90 * _DAY  # seconds; refreshed on every rating
RUN_TTL: Final = 30 * 60  # seconds; the longest a crashed replica can block a chat

ANSWER_SCHEMA: Final = 1
RUN_SCHEMA: Final = 1

# How often a WATCH-guarded change is retried when another client touched the key meanwhile.
_WATCH_ATTEMPTS: Final = 5


class CorruptValue(ValueError):
    """A stored value that cannot be decoded; reported as a warning, read back as None."""


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _check_ttl(ttl: int) -> int:
    if ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl}")
    return ttl


# --- decoding helpers: each raises CorruptValue on a value of the wrong shape ----------------


def _load(raw: str, supported: int) -> Mapping[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptValue(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CorruptValue("not a JSON object")
    version = data.get("v")
    if type(version) is not int:
        raise CorruptValue("no schema version")
    if version != supported:
        raise CorruptValue(f"unknown schema version {version} (this code reads {supported})")
    return data


def _str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise CorruptValue(f"{name!r} is not a string")
    return value


def _opt_str(data: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = data.get(name, default)
    if value is not None and not isinstance(value, str):
        raise CorruptValue(f"{name!r} is not a string or null")
    return value


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if type(value) is not int:  # bool is an int subclass, not a valid id
        raise CorruptValue(f"{name!r} is not an integer")
    return value


def _float(data: Mapping[str, Any], name: str, default: float) -> float:
    value = data.get(name, default)
    if type(value) not in (int, float):
        raise CorruptValue(f"{name!r} is not a number")
    return float(value)


def _ints(data: Mapping[str, Any], name: str) -> tuple[int, ...]:
    value = data.get(name)
    if not isinstance(value, list) or not all(type(item) is int for item in value):
        raise CorruptValue(f"{name!r} is not a list of integers")
    return tuple(value)


def _strs(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CorruptValue(f"{name!r} is not a list of strings")
    return tuple(value)


def _decode_or_none(key: str, raw: bytes | str | None, decode: Callable[[str], _T]) -> _T | None:
    text = _text(raw)
    if text is None:
        return None
    try:
        return decode(text)
    except CorruptValue as exc:
        logger.warning("ignoring unreadable value at Redis key %s: %s", key, exc)
        return None


# --- records ----------------------------------------------------------------------------------


def encode_answer(record: AnswerRecord) -> str:
    return json.dumps(
        {
            "v": ANSWER_SCHEMA,
            "agent": record.agent,
            "agent_message_id": record.agent_message_id,
            "conversation": record.conversation,
            "user_id": record.user_id,
            "end_user": record.end_user,
            "message_ids": list(record.message_ids),
            "suggestions": list(record.suggestions),
            "created_at": record.created_at,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_answer(raw: str) -> AnswerRecord:
    """Decode a stored answer record; raises `CorruptValue`."""
    data = _load(raw, ANSWER_SCHEMA)
    return AnswerRecord(
        agent=_str(data, "agent"),
        agent_message_id=_opt_str(data, "agent_message_id"),
        conversation=_opt_str(data, "conversation"),
        user_id=_int(data, "user_id"),
        end_user=_str(data, "end_user"),
        message_ids=_ints(data, "message_ids"),
        suggestions=_strs(data, "suggestions"),
        created_at=_float(data, "created_at", 0.0),
    )


def encode_run(run: RunningAnswer) -> str:
    return json.dumps(
        {
            "v": RUN_SCHEMA,
            "run_id": run.run_id,
            "agent": run.agent,
            "user_id": run.user_id,
            "end_user": run.end_user,
            "task_id": run.task_id,
            "replica": run.replica,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_run(raw: str) -> RunningAnswer:
    """Decode a stored running-answer marker; raises `CorruptValue`."""
    data = _load(raw, RUN_SCHEMA)
    return RunningAnswer(
        run_id=_str(data, "run_id"),
        agent=_str(data, "agent"),
        user_id=_int(data, "user_id"),
        end_user=_str(data, "end_user"),
        task_id=_opt_str(data, "task_id"),
        replica=_opt_str(data, "replica", "") or "",
    )


# --- stores -----------------------------------------------------------------------------------


class RedisConversationStore:
    """`ConversationStore`: one plain string key per (scope, agent), expiring when unused."""

    __slots__ = ("_keys", "_redis", "_ttl")

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: int = CONVERSATION_TTL) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = _check_ttl(ttl)

    async def get(self, scope: ChatScope, agent: str) -> str | None:
        return _text(await self._redis.get(self._keys.conversation(scope, agent)))

    async def set(self, scope: ChatScope, agent: str, ref: str) -> None:
        await self._redis.set(self._keys.conversation(scope, agent), ref, ex=self._ttl)

    async def clear(self, scope: ChatScope, agent: str) -> None:
        await self._redis.delete(self._keys.conversation(scope, agent))


class RedisAnswerStore:
    """`AnswerStore`: the same JSON record under each Telegram message id of the answer."""

    __slots__ = ("_keys", "_redis", "_ttl")

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: int = ANSWER_TTL) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = _check_ttl(ttl)

    async def save(self, scope: ChatScope, record: AnswerRecord) -> None:
        if not record.message_ids:
            return  # an answer that occupies no message cannot be looked up
        payload = encode_answer(record)
        async with self._redis.pipeline(transaction=True) as pipe:
            for message_id in record.message_ids:
                pipe.set(self._keys.answer(scope, message_id), payload, ex=self._ttl)
            latest = self._keys.latest_answer(scope, record.agent)
            pipe.set(latest, str(record.message_ids[0]), ex=self._ttl)
            await pipe.execute()

    async def get(self, scope: ChatScope, message_id: int) -> AnswerRecord | None:
        key = self._keys.answer(scope, message_id)
        return _decode_or_none(key, await self._redis.get(key), decode_answer)

    async def latest(self, scope: ChatScope, agent: str) -> int | None:
        raw = _text(await self._redis.get(self._keys.latest_answer(scope, agent)))
        return int(raw) if raw is not None and raw.isdigit() else None


class RedisFeedbackStore:
    """`FeedbackStore`: a hash per answer message, field = user id, value = rating."""

    __slots__ = ("_keys", "_redis", "_ttl")

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: int = FEEDBACK_TTL) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = _check_ttl(ttl)

    async def get(self, scope: ChatScope, message_id: int, user_id: int) -> str | None:
        key = self._keys.feedback(scope, message_id)
        rating = _text(await self._redis.hget(key, str(user_id)))
        if rating is not None and rating not in RATINGS:
            logger.warning("ignoring unknown rating %r at Redis key %s", rating, key)
            return None
        return rating

    async def set(
        self, scope: ChatScope, message_id: int, user_id: int, rating: str | None
    ) -> None:
        key = self._keys.feedback(scope, message_id)
        if rating is None:
            # Removing the last field deletes the hash, so no TTL bookkeeping is needed.
            await self._redis.hdel(key, str(user_id))
            return
        if rating not in RATINGS:
            raise ValueError(f"unknown rating {rating!r}; expected one of {RATINGS}")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(user_id), rating)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def counts(self, scope: ChatScope, message_id: int) -> dict[str, int]:
        key = self._keys.feedback(scope, message_id)
        counts = dict.fromkeys(RATINGS, 0)
        for raw in await self._redis.hvals(key):
            rating = _text(raw)
            if rating in counts:
                counts[rating] += 1
            else:
                logger.warning("ignoring unknown rating %r at Redis key %s", rating, key)
        return counts


class RedisRunStore:
    """`RunStore`: one expiring JSON marker per scope, changed only by the run that owns it."""

    __slots__ = ("_keys", "_redis", "_ttl")

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: int = RUN_TTL) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = _check_ttl(ttl)

    async def start(self, scope: ChatScope, run: RunningAnswer) -> None:
        """Record `run` as the chat's running answer, replacing any previous marker."""
        await self._redis.set(self._keys.run(scope), encode_run(run), ex=self._ttl)

    async def update_task(self, scope: ChatScope, run_id: str, task_id: str) -> None:
        """Attach the platform's task id, if `run_id` is still the running answer."""

        def store_task(pipe: Pipeline, key: str, current: RunningAnswer) -> None:
            pipe.set(key, encode_run(replace(current, task_id=task_id)), keepttl=True)

        await self._change_if_owner(scope, run_id, store_task)

    async def get(self, scope: ChatScope) -> RunningAnswer | None:
        key = self._keys.run(scope)
        return _decode_or_none(key, await self._redis.get(key), decode_run)

    async def finish(self, scope: ChatScope, run_id: str) -> None:
        def delete(pipe: Pipeline, key: str, current: RunningAnswer) -> None:
            pipe.delete(key)

        await self._change_if_owner(scope, run_id, delete)

    async def _change_if_owner(
        self,
        scope: ChatScope,
        run_id: str,
        change: Callable[[Pipeline, str, RunningAnswer], None],
    ) -> bool:
        """Queue `change` in MULTI/EXEC if the stored marker still belongs to `run_id`.

        Returns whether the change was applied. WATCH makes EXEC fail if another client wrote
        the key after we read it; we then read again. After `_WATCH_ATTEMPTS` such races the
        last `WatchError` propagates.
        """
        key = self._keys.run(scope)
        for attempt in range(1, _WATCH_ATTEMPTS + 1):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    current = _decode_or_none(key, await pipe.get(key), decode_run)
                    if current is None or current.run_id != run_id:
                        return False  # leaving the block UNWATCHes
                    pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py 8
                    change(pipe, key, current)
                    await pipe.execute()
                    return True
                except WatchError:
                    if attempt == _WATCH_ATTEMPTS:
                        raise
        raise AssertionError("unreachable")
