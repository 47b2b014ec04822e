"""The storage contract, run on fakeredis and on the real Redis server (see tests/conftest.py).

Every test states something a user or operator would notice: a conversation that continues in
the right chat with the right agent, feedback that counts each user once, a /stop that finds
the running answer, state that is still there after a restart or on another replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from storage import (
    ANSWER_TTL,
    CONVERSATION_TTL,
    FEEDBACK_TTL,
    RUN_TTL,
    AnswerRecord,
    ChatScope,
    KeySpace,
    RunningAnswer,
    Storage,
    StorageUnavailable,
    open_redis,
    redact_url,
)
from tests.conftest import DEFAULT_REDIS_TEST_URL, RedisFactory

BOT = 5_000_001
CHAT = -1_001_234_567_890
SCOPE = ChatScope(BOT, CHAT)
TOPIC = ChatScope(BOT, CHAT, thread_id=42)
OTHER_CHAT = ChatScope(BOT, CHAT - 1)
OTHER_BOT = ChatScope(BOT + 1, CHAT)

RECORD = AnswerRecord(
    agent="support",
    agent_message_id="msg-7f3a",
    conversation="conv-91c2",
    user_id=4242,
    end_user="tg-4242",
    message_ids=(101, 102, 103),
    suggestions=("Tell me more", "Что ещё?"),
    created_at=1_764_580_000.25,
)

RUN = RunningAnswer(run_id="run-1", agent="support", user_id=4242, end_user="tg-4242", replica="a")
NEWER_RUN = RunningAnswer(run_id="run-2", agent="docs", user_id=77, end_user="tg-77", replica="b")


# --- conversation refs ------------------------------------------------------------------------


async def test_conversation_refs_are_per_chat_topic_agent_and_bot(storage: Storage) -> None:
    conversations = storage.conversations
    await conversations.set(SCOPE, "support", "dify-conv-1")
    await conversations.set(SCOPE, "docs", "chaindesk-conv-2")
    await conversations.set(TOPIC, "support", "dify-conv-3")
    await conversations.set(OTHER_CHAT, "support", "dify-conv-4")
    await conversations.set(OTHER_BOT, "support", "dify-conv-5")

    assert await conversations.get(SCOPE, "support") == "dify-conv-1"
    assert await conversations.get(SCOPE, "docs") == "chaindesk-conv-2"
    assert await conversations.get(TOPIC, "support") == "dify-conv-3"
    assert await conversations.get(OTHER_CHAT, "support") == "dify-conv-4"
    assert await conversations.get(OTHER_BOT, "support") == "dify-conv-5"
    # A topic, chat or bot that never talked to an agent starts a new conversation with it.
    assert await conversations.get(TOPIC, "docs") is None
    assert await conversations.get(OTHER_BOT, "docs") is None
    assert await conversations.get(SCOPE, "tw") is None


async def test_conversation_set_replaces_and_clear_forgets_only_that_agent(
    storage: Storage,
) -> None:
    conversations = storage.conversations
    await conversations.set(SCOPE, "support", "old")
    await conversations.set(SCOPE, "support", "new")
    await conversations.set(SCOPE, "docs", "kept")
    await conversations.set(TOPIC, "support", "kept-in-topic")

    assert await conversations.get(SCOPE, "support") == "new"

    await conversations.clear(SCOPE, "support")
    await conversations.clear(SCOPE, "never-used")  # clearing nothing is fine

    assert await conversations.get(SCOPE, "support") is None
    assert await conversations.get(SCOPE, "docs") == "kept"
    assert await conversations.get(TOPIC, "support") == "kept-in-topic"


# --- answer records ---------------------------------------------------------------------------


async def test_answer_record_is_found_from_each_of_its_messages(storage: Storage) -> None:
    await storage.answers.save(SCOPE, RECORD)

    for message_id in RECORD.message_ids:
        assert await storage.answers.get(SCOPE, message_id) == RECORD
    assert await storage.answers.get(SCOPE, 104) is None
    # Telegram message ids repeat across chats and bots; a record belongs to its own chat.
    assert await storage.answers.get(TOPIC, 101) is None
    assert await storage.answers.get(OTHER_CHAT, 101) is None
    assert await storage.answers.get(OTHER_BOT, 101) is None


async def test_answer_record_saved_again_after_rollover_updates_every_message(
    storage: Storage,
) -> None:
    first = AnswerRecord(
        agent="tw",
        agent_message_id=None,
        conversation=None,
        user_id=1,
        end_user="tg-1",
        message_ids=(300,),
    )
    final = AnswerRecord(
        agent="tw",
        agent_message_id="m-9",
        conversation="c-9",
        user_id=1,
        end_user="tg-1",
        message_ids=(300, 301),
    )
    await storage.answers.save(SCOPE, first)
    assert await storage.answers.get(SCOPE, 300) == first

    await storage.answers.save(SCOPE, final)

    assert await storage.answers.get(SCOPE, 300) == final
    assert await storage.answers.get(SCOPE, 301) == final


# --- feedback ---------------------------------------------------------------------------------


async def test_feedback_counts_each_user_once_and_follows_changes(storage: Storage) -> None:
    feedback = storage.feedback
    assert await feedback.counts(SCOPE, 101) == {"like": 0, "dislike": 0}

    await feedback.set(SCOPE, 101, 1, "like")
    await feedback.set(SCOPE, 101, 2, "like")
    await feedback.set(SCOPE, 101, 3, "dislike")
    await feedback.set(SCOPE, 101, 2, "like")  # pressing the same button again changes nothing
    assert await feedback.counts(SCOPE, 101) == {"like": 2, "dislike": 1}
    assert await feedback.get(SCOPE, 101, 1) == "like"
    assert await feedback.get(SCOPE, 101, 3) == "dislike"
    assert await feedback.get(SCOPE, 101, 4) is None

    await feedback.set(SCOPE, 101, 1, "dislike")  # user 1 changes their mind
    assert await feedback.get(SCOPE, 101, 1) == "dislike"
    assert await feedback.counts(SCOPE, 101) == {"like": 1, "dislike": 2}

    await feedback.set(SCOPE, 101, 2, None)  # user 2 withdraws their rating
    await feedback.set(SCOPE, 101, 4, None)  # withdrawing a rating never given is fine
    assert await feedback.get(SCOPE, 101, 2) is None
    assert await feedback.counts(SCOPE, 101) == {"like": 0, "dislike": 2}

    # Ratings belong to one answer message in one chat.
    assert await feedback.counts(SCOPE, 102) == {"like": 0, "dislike": 0}
    assert await feedback.counts(TOPIC, 101) == {"like": 0, "dislike": 0}
    assert await feedback.get(OTHER_BOT, 101, 1) is None


async def test_feedback_cleared_by_everyone_counts_zero(storage: Storage) -> None:
    await storage.feedback.set(SCOPE, 101, 1, "like")
    await storage.feedback.set(SCOPE, 101, 1, None)

    assert await storage.feedback.counts(SCOPE, 101) == {"like": 0, "dislike": 0}
    assert await storage.feedback.get(SCOPE, 101, 1) is None


async def test_feedback_rejects_an_unknown_rating(storage: Storage) -> None:
    with pytest.raises(ValueError, match="unknown rating"):
        await storage.feedback.set(SCOPE, 101, 1, "meh")
    assert await storage.feedback.get(SCOPE, 101, 1) is None


# --- running answers --------------------------------------------------------------------------


async def test_running_answer_start_update_task_get_finish(storage: Storage) -> None:
    runs = storage.runs
    assert await runs.get(SCOPE) is None

    await runs.start(SCOPE, RUN)
    assert await runs.get(SCOPE) == RUN
    assert await runs.get(TOPIC) is None  # another topic is free to answer
    assert await runs.get(OTHER_BOT) is None

    await runs.update_task(SCOPE, RUN.run_id, "task-abc")
    assert await runs.get(SCOPE) == replace(RUN, task_id="task-abc")

    await runs.finish(SCOPE, RUN.run_id)
    assert await runs.get(SCOPE) is None
    await runs.finish(SCOPE, RUN.run_id)  # finishing twice is harmless


async def test_stale_run_cannot_finish_or_update_a_newer_run(storage: Storage) -> None:
    runs = storage.runs
    await runs.start(SCOPE, RUN)
    await runs.start(SCOPE, NEWER_RUN)  # e.g. the old run's replica was presumed dead

    await runs.update_task(SCOPE, RUN.run_id, "stale-task")
    await runs.finish(SCOPE, RUN.run_id)

    assert await runs.get(SCOPE) == NEWER_RUN
    await runs.finish(SCOPE, NEWER_RUN.run_id)
    assert await runs.get(SCOPE) is None


async def test_finish_racing_a_new_start_on_another_replica_never_loses_the_new_run(
    redis_factory: RedisFactory, storage: Storage, keyspace: KeySpace
) -> None:
    other_replica = Storage.on_redis(await redis_factory(), keyspace)
    for _ in range(25):
        await storage.runs.start(SCOPE, RUN)
        await asyncio.gather(
            storage.runs.finish(SCOPE, RUN.run_id),
            other_replica.runs.start(SCOPE, NEWER_RUN),
        )
        assert await storage.runs.get(SCOPE) == NEWER_RUN
        await storage.runs.finish(SCOPE, NEWER_RUN.run_id)


# --- expiry -----------------------------------------------------------------------------------


async def test_conversation_ref_expires_and_each_set_renews_it(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    key = keyspace.conversation(SCOPE, "support")
    await storage.conversations.set(SCOPE, "support", "c-1")
    assert 0 < await redis_client.ttl(key) <= CONVERSATION_TTL

    await redis_client.expire(key, 100)
    await storage.conversations.set(SCOPE, "support", "c-1")
    assert 100 < await redis_client.ttl(key) <= CONVERSATION_TTL


async def test_answer_record_expires_under_every_message_id(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    await storage.answers.save(SCOPE, RECORD)

    for message_id in RECORD.message_ids:
        assert 0 < await redis_client.ttl(keyspace.answer(SCOPE, message_id)) <= ANSWER_TTL


async def test_feedback_expires_and_keeps_expiring_when_a_rating_is_withdrawn(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    key = keyspace.feedback(SCOPE, 101)
    await storage.feedback.set(SCOPE, 101, 1, "like")
    await storage.feedback.set(SCOPE, 101, 2, "dislike")
    assert 0 < await redis_client.ttl(key) <= FEEDBACK_TTL

    await storage.feedback.set(SCOPE, 101, 2, None)
    assert 0 < await redis_client.ttl(key) <= FEEDBACK_TTL


async def test_running_answer_marker_expires_and_update_task_keeps_the_deadline(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    key = keyspace.run(SCOPE)
    await storage.runs.start(SCOPE, RUN)
    assert 0 < await redis_client.ttl(key) <= RUN_TTL

    await redis_client.expire(key, 100)  # as if the run had been going for a while
    await storage.runs.update_task(SCOPE, RUN.run_id, "task-1")

    assert 0 < await redis_client.ttl(key) <= 100
    running = await storage.runs.get(SCOPE)
    assert running is not None
    assert running.task_id == "task-1"


# --- unreadable data --------------------------------------------------------------------------

VALID_ANSWER = json.loads(
    '{"v":1,"agent":"a","agent_message_id":null,"conversation":null,"user_id":1,'
    '"end_user":"tg-1","message_ids":[1],"suggestions":[],"created_at":0}'
)
UNREADABLE = {
    "not JSON": "{not json",
    "truncated": '{"v":1,"agent":"a"',
    "JSON list": "[1, 2]",
    "JSON string": '"hello"',
    "no version": json.dumps({k: v for k, v in VALID_ANSWER.items() if k != "v"}),
    "future version": json.dumps({**VALID_ANSWER, "v": 99}),
    "version as text": json.dumps({**VALID_ANSWER, "v": "1"}),
    "user id as text": json.dumps({**VALID_ANSWER, "user_id": "1"}),
    "message ids not ints": json.dumps({**VALID_ANSWER, "message_ids": ["1"]}),
    "missing agent": json.dumps({k: v for k, v in VALID_ANSWER.items() if k != "agent"}),
}


@pytest.mark.parametrize("raw", UNREADABLE.values(), ids=UNREADABLE.keys())
async def test_unreadable_answer_record_reads_as_none_with_a_warning(
    storage: Storage,
    redis_client: Redis,
    keyspace: KeySpace,
    caplog: pytest.LogCaptureFixture,
    raw: str,
) -> None:
    key = keyspace.answer(SCOPE, 1)
    await redis_client.set(key, raw)

    with caplog.at_level(logging.WARNING, logger="storage"):
        assert await storage.answers.get(SCOPE, 1) is None

    assert any(key in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("raw", ["{not json", '{"v":2,"run_id":"run-1"}', '{"v":1,"run_id":7}'])
async def test_unreadable_running_answer_reads_as_none_and_a_new_run_replaces_it(
    storage: Storage,
    redis_client: Redis,
    keyspace: KeySpace,
    caplog: pytest.LogCaptureFixture,
    raw: str,
) -> None:
    await redis_client.set(keyspace.run(SCOPE), raw)

    with caplog.at_level(logging.WARNING, logger="storage"):
        assert await storage.runs.get(SCOPE) is None
        await storage.runs.update_task(SCOPE, "run-1", "t")  # no exception
        await storage.runs.finish(SCOPE, "run-1")
    assert any(keyspace.run(SCOPE) in record.getMessage() for record in caplog.records)

    await storage.runs.start(SCOPE, RUN)
    assert await storage.runs.get(SCOPE) == RUN


async def test_unknown_rating_in_storage_is_ignored_with_a_warning(
    storage: Storage,
    redis_client: Redis,
    keyspace: KeySpace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await storage.feedback.set(SCOPE, 101, 1, "like")
    await redis_client.hset(keyspace.feedback(SCOPE, 101), "2", "meh")

    with caplog.at_level(logging.WARNING, logger="storage"):
        assert await storage.feedback.get(SCOPE, 101, 2) is None
        assert await storage.feedback.counts(SCOPE, 101) == {"like": 1, "dislike": 0}
    assert any("meh" in record.getMessage() for record in caplog.records)


# --- compatibility and sharing ----------------------------------------------------------------


async def test_records_written_by_schema_version_1_stay_readable(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    # Pinned literals: a later release must still read what this one wrote. Fields added later
    # by a compatible writer ("added_later") are ignored; optional fields may be missing.
    await redis_client.set(
        keyspace.answer(SCOPE, 7),
        '{"v":1,"agent":"support","agent_message_id":"m1","conversation":"c1","user_id":9,'
        '"end_user":"tg-9","message_ids":[7,8],"suggestions":["Why?"],"created_at":12.5,'
        '"added_later":{"x":1}}',
    )
    await redis_client.set(
        keyspace.answer(SCOPE, 9),
        '{"v":1,"agent":"tw","agent_message_id":null,"conversation":null,"user_id":9,'
        '"end_user":"tg-9","message_ids":[9]}',
    )
    await redis_client.set(
        keyspace.run(SCOPE),
        '{"v":1,"run_id":"r1","agent":"support","user_id":9,"end_user":"tg-9"}',
    )

    assert await storage.answers.get(SCOPE, 7) == AnswerRecord(
        agent="support",
        agent_message_id="m1",
        conversation="c1",
        user_id=9,
        end_user="tg-9",
        message_ids=(7, 8),
        suggestions=("Why?",),
        created_at=12.5,
    )
    assert await storage.answers.get(SCOPE, 9) == AnswerRecord(
        agent="tw",
        agent_message_id=None,
        conversation=None,
        user_id=9,
        end_user="tg-9",
        message_ids=(9,),
    )
    assert await storage.runs.get(SCOPE) == RunningAnswer(
        run_id="r1", agent="support", user_id=9, end_user="tg-9"
    )


async def test_state_survives_a_new_connection_and_is_shared_by_replicas(
    redis_factory: RedisFactory, storage: Storage, keyspace: KeySpace
) -> None:
    await storage.conversations.set(TOPIC, "support", "conv-after-restart")
    await storage.answers.save(TOPIC, RECORD)
    await storage.feedback.set(TOPIC, 102, 1, "dislike")
    await storage.runs.start(TOPIC, RUN)

    # A restarted bot, or another replica: a new client with its own connections.
    restarted = Storage.on_redis(await redis_factory(), keyspace)

    assert await restarted.conversations.get(TOPIC, "support") == "conv-after-restart"
    assert await restarted.answers.get(TOPIC, 103) == RECORD
    assert await restarted.feedback.get(TOPIC, 102, 1) == "dislike"
    assert await restarted.feedback.counts(TOPIC, 102) == {"like": 0, "dislike": 1}
    assert await restarted.runs.get(TOPIC) == RUN
    await restarted.runs.finish(TOPIC, RUN.run_id)  # /stop handled by another replica
    assert await storage.runs.get(TOPIC) is None


async def test_deployments_with_different_namespaces_do_not_see_each_other(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    other = Storage.on_redis(redis_client, KeySpace(namespace=keyspace.namespace + "-other"))
    await storage.conversations.set(SCOPE, "support", "mine")
    await storage.runs.start(SCOPE, RUN)

    assert await other.conversations.get(SCOPE, "support") is None
    assert await other.runs.get(SCOPE) is None


async def test_every_key_is_versioned_and_inside_the_namespace(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    await storage.conversations.set(TOPIC, "support", "c")
    await storage.answers.save(TOPIC, RECORD)
    await storage.feedback.set(TOPIC, 101, 1, "like")
    await storage.runs.start(TOPIC, RUN)

    found = {key async for key in redis_client.scan_iter(match=keyspace.match_all)}

    scope = f"{BOT}:{CHAT}:42"
    ns = keyspace.namespace
    assert found == {
        f"{ns}:v1:conversation:{scope}:support",
        f"{ns}:v1:answer:{scope}:101",
        f"{ns}:v1:answer:{scope}:102",
        f"{ns}:v1:answer:{scope}:103",
        f"{ns}:v1:latest:{scope}:support",
        f"{ns}:v1:feedback:{scope}:101",
        f"{ns}:v1:run:{scope}",
    }


async def test_the_latest_answer_of_each_agent_is_known(storage: Storage) -> None:
    assert await storage.answers.latest(TOPIC, "support") is None
    await storage.answers.save(TOPIC, RECORD)
    second = AnswerRecord(
        agent="support",
        agent_message_id="msg-2",
        conversation="conv-91c2",
        user_id=4242,
        end_user="tg-4242",
        message_ids=(201, 202),
    )
    await storage.answers.save(TOPIC, second)
    other = AnswerRecord(
        agent="sales",
        agent_message_id="msg-3",
        conversation=None,
        user_id=4242,
        end_user="tg-4242",
        message_ids=(301,),
    )
    await storage.answers.save(TOPIC, other)

    assert await storage.answers.latest(TOPIC, "support") == 201
    assert await storage.answers.latest(TOPIC, "sales") == 301
    assert await storage.answers.latest(SCOPE, "support") is None, "per topic"


# --- key space and opening Redis (backend-independent) ----------------------------------------


def test_default_key_names() -> None:
    keys = KeySpace()
    assert (
        keys.conversation(ChatScope(1, -2), "support") == "relaygram:v1:conversation:1:-2:0:support"
    )
    assert keys.answer(ChatScope(1, -2, 3), 10) == "relaygram:v1:answer:1:-2:3:10"
    assert keys.feedback(ChatScope(1, -2, 3), 10) == "relaygram:v1:feedback:1:-2:3:10"
    assert keys.run(ChatScope(1, -2, 3)) == "relaygram:v1:run:1:-2:3"
    assert KeySpace("a*b[1]").match_all == "a\\*b\\[1\\]:v1:*"
    with pytest.raises(ValueError, match="namespace"):
        KeySpace("")


async def test_open_redis_without_url_gives_a_private_embedded_store() -> None:
    first, first_embedded = await open_redis(None)
    second, _ = await open_redis(None)
    try:
        assert first_embedded is True
        await first.set("k", "v")
        assert await first.get("k") == "v"  # decode_responses: str, not bytes
        assert await second.get("k") is None
    finally:
        await first.aclose()
        await second.aclose()


async def test_open_redis_failure_is_one_line_without_the_password() -> None:
    url = "redis://bot:hunter2-secret@127.0.0.1:1/0"  # nothing listens on port 1

    with pytest.raises(StorageUnavailable) as caught:
        await open_redis(url)

    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "127.0.0.1:1" in message
    assert "\n" not in message
    assert caught.value.__cause__ is None


async def test_open_redis_rejects_a_malformed_url_clearly() -> None:
    with pytest.raises(StorageUnavailable, match="invalid Redis URL"):
        await open_redis("http://user:hunter2-secret@example.invalid/0")


def test_redact_url_hides_the_password_and_query() -> None:
    assert redact_url("redis://:pw@redis:6380/2?password=pw2") == "redis://:***@redis:6380/2"
    assert redact_url("rediss://app:pw@[::1]:6379/0") == "rediss://app:***@[::1]:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"


@pytest.mark.parametrize("redis_factory", ["redis"], indirect=True)
async def test_open_redis_with_a_url_connects_to_the_real_server(
    redis_factory: RedisFactory,  # skips or fails exactly like the contract suite
) -> None:
    client, embedded = await open_redis(os.environ.get("REDIS_TEST_URL", DEFAULT_REDIS_TEST_URL))
    try:
        assert embedded is False
        assert await client.ping() is True
    finally:
        await client.aclose()
