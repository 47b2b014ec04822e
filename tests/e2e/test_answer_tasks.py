"""Answers run in tasks of the chat service, not in aiogram's handler: what that changes for users.

The handler returns as soon as the question is handed over, so aiogram lets go of the update
while the answer streams; the service still answers each chat in order, tells the user when
something fails before the answer starts, and at shutdown finishes what runs and tells what
waits.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import fakeredis
import pytest
from aiogram.types import Message, Update
from redis.exceptions import RedisError

from bot.agents.base import AgentEvent, AgentRequest, TextDelta
from bot.agents.dify import DifyClient
from bot.services.routing import AgentRouting
from bot.streaming.clock import ScaledClock
from storage import Storage
from tests.e2e.conftest import Harness, bot_messages, finished, slow_access_check
from tests.fakes.dify import FakeDify, Script
from tests.fakes.telegram import FakeTelegram

SORRY = "⚠️ Something went wrong on my side. Please try again."
RESTARTING = "⚠️ I am restarting and could not answer this. Please send it again."


def live_messages(chat_id: int, message_id: int) -> list[Message]:
    # aiogram caches `Update.event_type` in an lru_cache keyed by the update: it keeps the
    # last 128 updates alive, whoever handles them (bounded, so it is left alone).
    getattr(Update.event_type, "fget").cache_clear()  # noqa: B009 (mypy: a property's fget)
    gc.collect()
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, Message) and o.chat.id == chat_id and o.message_id == message_id
    ]


async def test_the_update_is_let_go_while_its_answer_streams(h: Harness) -> None:
    # A thousand answers at once each kept aiogram's parsed update and middleware chain alive
    # for as long as they streamed (tens of MB); now the handler returns at once.
    app = h.app
    assert app is not None
    h.dify.app.default_script = Script(chunks=[f"w{i} " for i in range(60)], delay=0.02)
    raw = h.telegram.user_text(h.user_id, "a long one")
    message_id = raw["message"]["message_id"]

    handled = app.dispatcher.feed_update(
        app.bot, Update.model_validate(raw, context={"bot": app.bot})
    )
    await asyncio.wait_for(handled, 5)  # returns while the answer has barely begun
    await h.until(lambda: bot_messages(h))
    assert finished(h) is None, "the answer is still streaming"

    assert live_messages(h.user_id, message_id) == []
    final = await h.until(lambda: finished(h))
    assert final.visible_text == " ".join(f"w{i}" for i in range(60))


async def test_messages_of_one_chat_are_still_answered_in_order(h: Harness) -> None:
    h.dify.app.default_script = Script(delay=0.01)
    for n in range(4):
        h.say(f"question {n}")
    await h.until(lambda: len([m for m in bot_messages(h) if m.reply_markup]) == 4)
    await h.until_settled()

    asked = [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")]
    assert asked == [f"question {n}" for n in range(4)]
    assert h.texts() == [f"Echo: question {n}" for n in range(4)]


async def test_a_failure_before_the_answer_starts_is_told_to_the_user(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_current(*args: object, **kwargs: object) -> str:
        raise RedisError("Redis went away")

    monkeypatch.setattr(AgentRouting, "current", broken_current)
    h.say("hello")

    await h.until(lambda: SORRY in h.texts())
    await h.until_settled()
    assert h.dify.calls_to("POST", "/chat-messages") == []
    assert all("Redis went away" not in text for text in h.texts())


async def test_shutdown_finishes_the_running_answer_and_tells_the_waiting_one(
    h: Harness,
) -> None:
    h.dify.app.default_script = Script(chunks=[f"w{i} " for i in range(400)], delay=0.05)
    h.say("first")
    h.say("second")
    await h.until(lambda: bot_messages(h))  # the first answer is on screen, the second waits

    await h.stop()  # as on SIGTERM: polling ends, then the dispatcher's shutdown

    assert [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")] == ["first"]
    texts = h.texts()
    assert texts[-1] == RESTARTING, texts
    stopped = texts[-2]
    assert stopped.startswith("w0"), stopped
    assert stopped.endswith("⏹ Stopped."), stopped
    assert not any("⏹ Stop" in str(m.reply_markup) for m in bot_messages(h)), "no button left"


async def test_closing_an_app_that_does_not_poll_ends_its_answers_properly(
    telegram: FakeTelegram, dify: FakeDify, clock: ScaledClock
) -> None:
    # A replica fed by webhook has no polling loop whose end stops the answers.
    h = Harness(telegram, dify, clock, Storage.on_redis(fakeredis.FakeAsyncRedis()))
    app = await h.start(poll=False)
    dify.app.default_script = Script(chunks=[f"w{i} " for i in range(400)], delay=0.05)
    raw = telegram.user_text(h.user_id, "a long one")
    await app.dispatcher.feed_update(app.bot, Update.model_validate(raw, context={"bot": app.bot}))
    await h.until(lambda: bot_messages(h))

    await h.stop()

    final = bot_messages(h)[-1]
    assert final.visible_text.endswith("⏹ Stopped."), final.visible_text
    assert "⏹ Stop" not in str(final.reply_markup)


async def test_a_message_slower_to_check_is_still_answered_before_the_next(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiogram handles the updates of one batch concurrently; here the first message's access
    # check (a Redis call) is the slower one.
    slow_access_check(monkeypatch, lambda question: question == "first")
    h.say("first")
    h.say("second")  # the same getUpdates batch
    await h.until(lambda: len([m for m in bot_messages(h) if m.reply_markup]) == 2)
    await h.until_settled()

    asked = [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")]
    assert asked == ["first", "second"]
    assert h.texts() == ["Echo: first", "Echo: second"]


async def test_nothing_is_kept_per_chat_in_aiograms_fsm_storage(h: Harness) -> None:
    # The bot keeps no aiogram conversation state; with the FSM middleware on, its
    # MemoryStorage got a record for every chat and user ever seen, kept for the process's life.
    app = h.app
    assert app is not None
    h.say("hello")
    await h.until(lambda: finished(h))
    await h.until_settled()
    assert h.texts() == ["Echo: hello"]
    storage = app.dispatcher.fsm.storage
    assert getattr(storage, "storage", {}) == {}


async def test_an_answer_cancelled_mid_stream_closes_its_agent_stream(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancelling an answer's task (what shutdown does after its grace) must not leave the
    # agent's stream running, unread, in a task of its own.
    app = h.app
    assert app is not None
    streaming, closed = asyncio.Event(), asyncio.Event()

    async def endless(self: DifyClient, request: AgentRequest) -> AsyncIterator[AgentEvent]:
        try:
            yield TextDelta("thinking")
            streaming.set()
            await asyncio.Event().wait()
        finally:
            closed.set()

    monkeypatch.setattr(DifyClient, "stream", endless)
    h.say("hello")
    await asyncio.wait_for(streaming.wait(), 5)
    for task in list(app.chat_service._tasks):
        task.cancel()
    await asyncio.wait_for(closed.wait(), 5)
