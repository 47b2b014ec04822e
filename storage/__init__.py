"""relaygram's shared state: small interfaces (`storage.base`) kept in Redis.

`open_redis(url)` gives the client: a real server for a URL, or an embedded in-memory store
(fakeredis, the same code path) when there is none. `Storage.on_redis(client)` bundles the
stores on that client. This package imports nothing from `bot` or `handlers`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from storage.base import (
    CHAT_MODES,
    HISTORY_ROLES,
    OUTCOMES,
    RATINGS,
    AgentStats,
    AnswerRecord,
    AnswerStore,
    BotBudgetStore,
    ChatPrefs,
    ChatPrefsStore,
    ChatScope,
    ConversationStore,
    FeedbackStore,
    HistoryStore,
    NoticeStore,
    RateLimiter,
    RunningAnswer,
    RunStore,
    StatsStore,
)
from storage.keys import KeySpace
from storage.redis_extra import (
    HISTORY_TTL,
    STATS_MAX_SAMPLES,
    STATS_RETENTION,
    STATS_TTL,
    RedisBotBudgetStore,
    RedisChatPrefsStore,
    RedisHistoryStore,
    RedisNoticeStore,
    RedisRateLimiter,
    RedisStatsStore,
)
from storage.redis_store import (
    ANSWER_TTL,
    CONVERSATION_TTL,
    FEEDBACK_TTL,
    RUN_TTL,
    RedisAnswerStore,
    RedisConversationStore,
    RedisFeedbackStore,
    RedisRunStore,
)

__all__ = [
    "ANSWER_TTL",
    "BUDGET_CONNECTIONS",
    "CHAT_MODES",
    "CONVERSATION_TTL",
    "FEEDBACK_TTL",
    "HISTORY_ROLES",
    "HISTORY_TTL",
    "OUTCOMES",
    "RATINGS",
    "RUN_TTL",
    "STATS_MAX_SAMPLES",
    "STATS_RETENTION",
    "STATS_TTL",
    "AgentStats",
    "AnswerRecord",
    "AnswerStore",
    "BotBudgetStore",
    "ChatPrefs",
    "ChatPrefsStore",
    "ChatScope",
    "ConversationStore",
    "FeedbackStore",
    "HistoryStore",
    "KeySpace",
    "NoticeStore",
    "RateLimiter",
    "RunStore",
    "RunningAnswer",
    "StatsStore",
    "Storage",
    "StorageUnavailable",
    "open_redis",
    "redact_url",
]

# Seconds to wait for the server when opening a client (a URL's own
# `socket_connect_timeout=` query parameter takes precedence).
CONNECT_TIMEOUT = 5.0
# Connections per process, and how long a call waits for a free one before failing.
MAX_CONNECTIONS = 256
POOL_TIMEOUT = 10.0
# The bot-wide Telegram budget is taken about 30 times a second and paces every call the bot
# makes: it has connections of its own, so it never queues behind a burst of handlers
# (measured on the shared pool: 1.1 s per take while 1,000 messages arrived at once).
BUDGET_CONNECTIONS = 2


class StorageUnavailable(RuntimeError):
    """Redis cannot be reached; the message is one line and never contains a password."""


@dataclass(frozen=True, slots=True)
class Storage:
    """Every store the bot uses, on one Redis client (the client is owned by the caller)."""

    redis: Redis
    conversations: ConversationStore
    answers: AnswerStore
    feedback: FeedbackStore
    runs: RunStore
    history: HistoryStore
    chat_prefs: ChatPrefsStore
    rate_limits: RateLimiter
    stats: StatsStore
    bot_budget: BotBudgetStore
    notices: NoticeStore

    @classmethod
    def on_redis(
        cls, redis: Redis, keys: KeySpace | None = None, *, budget_redis: Redis | None = None
    ) -> Storage:
        """The Redis-backed stores on `redis` under `keys` (default: `KeySpace()`); the
        bot-wide budget on `budget_redis` when given (the same server, its own connections)."""
        keys = keys if keys is not None else KeySpace()
        return cls(
            redis=redis,
            conversations=RedisConversationStore(redis, keys),
            answers=RedisAnswerStore(redis, keys),
            feedback=RedisFeedbackStore(redis, keys),
            runs=RedisRunStore(redis, keys),
            history=RedisHistoryStore(redis, keys),
            chat_prefs=RedisChatPrefsStore(redis, keys),
            rate_limits=RedisRateLimiter(redis, keys),
            stats=RedisStatsStore(redis, keys),
            bot_budget=RedisBotBudgetStore(budget_redis or redis, keys),
            notices=RedisNoticeStore(redis, keys),
        )


def redact_url(url: str) -> str:
    """`url` fit for logs and errors: the password becomes ``***``, the query is dropped."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable Redis URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc}"
    elif parts.username:
        netloc = f"{parts.username}@{netloc}"
    return f"{parts.scheme}://{netloc}{parts.path}"


async def open_redis(url: str | None, *, max_connections: int | None = None) -> tuple[Redis, bool]:
    """Open the Redis client the bot stores its state in.

    With a URL: a real client (``decode_responses=True``), pinged before it is returned;
    `StorageUnavailable` if it cannot be reached. Without one: an embedded in-memory
    fakeredis store and ``True`` ("embedded": state is lost on restart and not shared between
    processes; the caller warns about it). The caller closes the client (``await r.aclose()``).
    `max_connections` caps the client's pool (default `MAX_CONNECTIONS`).
    """
    if url is None:
        # Imported here: a bot on a real Redis never needs it (3 MB of a process's memory).
        import fakeredis

        embedded: Redis = fakeredis.FakeAsyncRedis(
            server=fakeredis.FakeServer(),  # private to this client, not shared by address
            decode_responses=True,
        )
        return embedded, True

    where = redact_url(url)
    try:
        # A blocking pool: with hundreds of answers at once, a Redis call waits for a free
        # connection instead of failing with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections or MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        client = Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
    except ValueError as exc:
        raise StorageUnavailable(f"invalid Redis URL {where}: {_one_line(exc, url)}") from None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT * 3):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        reason = _one_line(exc, url) or type(exc).__name__
        raise StorageUnavailable(f"cannot connect to Redis at {where}: {reason}") from None
    return client, False


def _one_line(exc: BaseException, url: str) -> str:
    """The exception's message on one line, with any secret of `url` scrubbed out."""
    text = " ".join(str(exc).split())
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text
