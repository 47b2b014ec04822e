"""Shared fixtures. Storage: every contract test runs on fakeredis and on the real Redis server.

The real server is `REDIS_TEST_URL` (default ``redis://127.0.0.1:6379/15``). When it cannot be
reached the "redis" variant is skipped, or fails when ``RELAYGRAM_REQUIRE_REDIS=1`` (CI).
Each test writes under its own `KeySpace` namespace and only those keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import fakeredis
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

import bot  # noqa: F401  (first: aiogram is imported the bot's way, see bot/lean_aiogram.py)
from storage import KeySpace, Storage, redact_url

DEFAULT_REDIS_TEST_URL = "redis://127.0.0.1:6379/15"

RedisFactory = Callable[[], Awaitable[Redis]]
"""Opens another client on the same backing store (a "restart" or another replica)."""


def real_redis_url_or_skip() -> str:
    """`REDIS_TEST_URL` when the server answers; else skip (printing why), or fail in CI."""
    url = os.environ.get("REDIS_TEST_URL", DEFAULT_REDIS_TEST_URL)
    client = SyncRedis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        reason = f"real Redis at {redact_url(url)} is unreachable ({type(exc).__name__}: {exc})"
        if os.environ.get("RELAYGRAM_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason}; RELAYGRAM_REQUIRE_REDIS=1 requires it", pytrace=False)
        print(f"skipping: {reason}")
        pytest.skip(f"{reason}; set REDIS_TEST_URL or start Redis")
    finally:
        client.close()
    return url


@pytest.fixture
def real_redis_url() -> str:
    return real_redis_url_or_skip()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
async def redis_factory(request: pytest.FixtureRequest) -> AsyncIterator[RedisFactory]:
    clients: list[Redis] = []

    if request.param == "fakeredis":
        server = fakeredis.FakeServer()

        async def connect() -> Redis:
            client: Redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
            clients.append(client)
            return client

    else:
        url = real_redis_url_or_skip()

        async def connect() -> Redis:
            client = Redis.from_url(url, decode_responses=True, socket_connect_timeout=2)
            try:
                await client.ping()
            except BaseException:
                await client.aclose()
                raise
            clients.append(client)
            return client

        await connect()

    try:
        yield connect
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def redis_client(redis_factory: RedisFactory) -> Redis:
    return await redis_factory()


@pytest.fixture
async def keyspace(redis_client: Redis) -> AsyncIterator[KeySpace]:
    """A namespace of this test's own; its keys (and only those) are deleted afterwards."""
    keys = KeySpace(namespace=f"relaygram-test-{uuid.uuid4().hex}")
    yield keys
    leftovers = [key async for key in redis_client.scan_iter(match=keys.match_all, count=500)]
    if leftovers:
        await redis_client.delete(*leftovers)


@pytest.fixture
def storage(redis_client: Redis, keyspace: KeySpace) -> Storage:
    return Storage.on_redis(redis_client, keyspace)
