"""What operators rely on: state that survives a restart, a custom Bot API server over HTTP."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from aiogram.types import Update
from pydantic import SecretStr
from redis.asyncio import Redis

import storage
from bot.app import create_app
from bot.config import Settings
from bot.streaming.clock import ScaledClock
from storage import ChatScope, KeySpace, Storage
from tests.conftest import RedisFactory
from tests.e2e.conftest import BOT_ID, BOT_TOKEN, DIFY_KEY, Harness, agents_config, finished
from tests.fakes.dify import FakeDify
from tests.fakes.telegram import FakeTelegram, FakeTelegramSession


def chat_calls(dify: FakeDify) -> list[dict[str, object]]:
    return [c.json for c in dify.calls_to("POST", "/chat-messages")]


async def test_conversation_survives_a_restart_and_is_shared_by_replicas(
    redis_factory: RedisFactory,
    keyspace: KeySpace,
    telegram: FakeTelegram,
    dify: FakeDify,
    clock: ScaledClock,
) -> None:
    first = Harness(telegram, dify, clock, Storage.on_redis(await redis_factory(), keyspace))
    await first.start()
    try:
        first.say("remember me")
        await first.until(lambda: finished(first))
    finally:
        await first.stop()

    # A new process: a new Redis connection, nothing in memory.
    second = Harness(telegram, dify, clock, Storage.on_redis(await redis_factory(), keyspace))
    await second.start()
    try:
        second.say("do you remember?")
        await second.until(lambda: len(chat_calls(dify)) == 2)
        await second.until_idle()
    finally:
        await second.stop()

    conversation = next(iter(dify.conversations))
    assert [c["conversation_id"] for c in chat_calls(dify)] == ["", conversation]


async def test_bot_works_against_a_custom_bot_api_server_over_http(
    h_http: Harness, telegram: FakeTelegram
) -> None:
    h_http.say("hello over http")
    await h_http.until(
        lambda: (
            telegram.messages(h_http.user_id)[-1:]
            and telegram.messages(h_http.user_id)[-1].reply_markup
        )
    )
    assert telegram.visible_texts(h_http.user_id) == ["Echo: hello over http"]


async def test_secrets_never_reach_the_chat_or_the_logs(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h.dify.fail_next(401, {"code": "unauthorized", "message": f"bad key {DIFY_KEY}", "status": 401})
    h.say("hello")
    await h.until(lambda: any("credentials" in t for t in h.texts()))
    shown = "\n".join(h.texts())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (DIFY_KEY, BOT_TOKEN):
        assert secret not in shown
        assert secret not in logged


async def test_without_redis_url_the_bot_runs_on_an_embedded_store_and_says_so(
    telegram: FakeTelegram, dify: FakeDify, clock: ScaledClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient(transport=dify.transport()) as http:
        app = await create_app(
            Settings(bot_token=SecretStr(BOT_TOKEN), _env_file=None),
            agents_config(),
            session=FakeTelegramSession(telegram),
            http=http,
            clock=clock,
        )
        try:
            update = telegram.user_text(1001, "hello")
            await app.dispatcher.feed_update(
                app.bot, Update.model_validate(update, context={"bot": app.bot})
            )
            await app.chat_service.wait_idle()
            assert telegram.visible_texts(1001) == ["Echo: hello"]
            assert await app.storage.conversations.get(ChatScope(BOT_ID, 1001), "support")
        finally:
            await app.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("REDIS_URL is not set" in w and "lost when the bot restarts" in w for w in warnings)


@pytest.mark.redis
async def test_the_telegram_budget_never_waits_behind_busy_handlers(
    telegram: FakeTelegram,
    dify: FakeDify,
    clock: ScaledClock,
    real_redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every connection the handlers share is busy (here: one, blocked for 3 s), as when a
    # thousand messages arrive at once. The calls that show answers must still go out.
    monkeypatch.setattr(storage, "MAX_CONNECTIONS", 1)
    settings = Settings(
        bot_token=SecretStr(BOT_TOKEN), redis_url=SecretStr(real_redis_url), _env_file=None
    )
    async with httpx.AsyncClient(transport=dify.transport()) as http:
        app = await create_app(
            settings, agents_config(), session=FakeTelegramSession(telegram), http=http
        )
        budget_key = KeySpace().bot_budget(BOT_ID)

        async def block_the_pool() -> None:
            await app.storage.redis.blpop(["relaygram-test-never"], timeout=3)

        busy = asyncio.create_task(block_the_pool())
        try:
            await asyncio.sleep(0.1)  # the blocking call holds the only shared connection
            for chat in (1001, 1002, 1003):
                await asyncio.wait_for(app.sender.flood.turn(chat), timeout=1.0)
            assert not busy.done()
            # Taken from the shared budget in Redis (not a local fallback), on its own client.
            budget_redis = Redis.from_url(real_redis_url)
            try:
                assert await budget_redis.zcard(budget_key) == 3
            finally:
                await budget_redis.aclose()
        finally:
            await busy
            await app.storage.redis.delete(budget_key)
            await app.aclose()
