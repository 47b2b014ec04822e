"""The contract of the kept history, chat preferences, rate budgets and stats stores.

Run on fakeredis and on the real Redis server like tests/storage/test_contract.py. Every test
states something a user or operator would notice: an OpenAI-compatible agent that remembers
the right conversation, a chosen agent still chosen after a restart, a flood limit that holds
across replicas, a /stats that counts what happened in the window asked for.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from redis.asyncio import Redis

from storage import (
    HISTORY_TTL,
    STATS_RETENTION,
    STATS_TTL,
    AgentStats,
    ChatPrefs,
    ChatScope,
    KeySpace,
    Storage,
)
from storage.redis_extra import RedisStatsStore
from tests.conftest import RedisFactory

BOT = 5_000_001
CHAT = -1_001_234_567_890
SCOPE = ChatScope(BOT, CHAT)
TOPIC = ChatScope(BOT, CHAT, thread_id=42)
OTHER_CHAT = ChatScope(BOT, CHAT - 1)
OTHER_BOT = ChatScope(BOT + 1, CHAT)
USER = 4242
T0 = 1_764_580_000.0  # an arbitrary "now" in epoch seconds
DAY = 24 * 60 * 60


def exchange(n: int) -> list[tuple[str, str]]:
    return [("user", f"question {n}"), ("assistant", f"answer {n}")]


# --- kept history -----------------------------------------------------------------------------


async def test_history_is_per_agent_topic_chat_and_bot_oldest_first(storage: Storage) -> None:
    history = storage.history
    await history.append(SCOPE, "gpt", [("user", "Привет"), ("assistant", "你好 👋")], keep=10)
    await history.append(SCOPE, "gpt", [("user", "and then?")], keep=10)
    await history.append(SCOPE, "local", exchange(1), keep=10)
    await history.append(TOPIC, "gpt", exchange(2), keep=10)
    await history.append(OTHER_BOT, "gpt", exchange(3), keep=10)

    assert await history.get(SCOPE, "gpt") == [
        ("user", "Привет"),
        ("assistant", "你好 👋"),
        ("user", "and then?"),
    ]
    assert await history.get(SCOPE, "local") == exchange(1)
    assert await history.get(TOPIC, "gpt") == exchange(2)
    assert await history.get(OTHER_BOT, "gpt") == exchange(3)
    # A topic, chat or agent that never talked starts from nothing.
    assert await history.get(TOPIC, "local") == []
    assert await history.get(OTHER_CHAT, "gpt") == []


async def test_history_keeps_only_the_newest_turns(storage: Storage) -> None:
    for n in range(1, 5):
        await storage.history.append(SCOPE, "gpt", exchange(n), keep=4)

    assert await storage.history.get(SCOPE, "gpt") == exchange(3) + exchange(4)

    # One append longer than `keep` keeps its own newest turns.
    await storage.history.append(SCOPE, "gpt", exchange(5) + exchange(6) + exchange(7), keep=3)
    assert await storage.history.get(SCOPE, "gpt") == [
        ("assistant", "answer 6"),
        *exchange(7),
    ]


async def test_history_clear_forgets_only_that_agent_in_that_scope(storage: Storage) -> None:
    await storage.history.append(SCOPE, "gpt", exchange(1), keep=10)
    await storage.history.append(SCOPE, "local", exchange(2), keep=10)
    await storage.history.append(TOPIC, "gpt", exchange(3), keep=10)

    await storage.history.clear(SCOPE, "gpt")
    await storage.history.clear(SCOPE, "never-used")

    assert await storage.history.get(SCOPE, "gpt") == []
    assert await storage.history.get(SCOPE, "local") == exchange(2)
    assert await storage.history.get(TOPIC, "gpt") == exchange(3)


async def test_history_rejects_an_unknown_role_and_writes_nothing(storage: Storage) -> None:
    await storage.history.append(SCOPE, "gpt", exchange(1), keep=10)

    with pytest.raises(ValueError, match="unknown role"):
        await storage.history.append(SCOPE, "gpt", [("user", "hi"), ("system", "obey")], keep=10)
    with pytest.raises(ValueError, match="keep"):
        await storage.history.append(SCOPE, "gpt", exchange(2), keep=0)
    await storage.history.append(SCOPE, "gpt", [], keep=10)  # nothing to add is fine

    assert await storage.history.get(SCOPE, "gpt") == exchange(1)


async def test_concurrent_appends_from_two_replicas_keep_each_exchange_together(
    redis_factory: RedisFactory, storage: Storage, keyspace: KeySpace
) -> None:
    other_replica = Storage.on_redis(await redis_factory(), keyspace)

    await asyncio.gather(
        *(
            (storage if n % 2 else other_replica).history.append(SCOPE, "gpt", exchange(n), 8)
            for n in range(20)
        )
    )

    turns = await storage.history.get(SCOPE, "gpt")
    assert len(turns) == 8
    for question, answer in zip(turns[::2], turns[1::2], strict=True):
        assert question[0] == "user"
        assert answer == ("assistant", question[1].replace("question", "answer"))


async def test_history_expires_and_each_append_renews_it(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    key = keyspace.history(SCOPE, "gpt")
    await storage.history.append(SCOPE, "gpt", exchange(1), keep=10)
    assert 0 < await redis_client.ttl(key) <= HISTORY_TTL

    await redis_client.expire(key, 100)
    await storage.history.append(SCOPE, "gpt", exchange(2), keep=10)
    assert 100 < await redis_client.ttl(key) <= HISTORY_TTL


async def test_unreadable_history_turns_are_skipped_with_a_warning(
    storage: Storage,
    redis_client: Redis,
    keyspace: KeySpace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = keyspace.history(SCOPE, "gpt")
    # Pinned v1 literals (a later release must still read them) around unreadable entries.
    await redis_client.rpush(
        key,
        '{"v":1,"role":"user","content":"kept 1","added_later":true}',
        "{not json",
        '{"v":2,"role":"user","content":"future"}',
        '{"v":1,"role":"system","content":"not a turn"}',
        '{"v":1,"role":"assistant","content":7}',
        '{"v":1,"role":"assistant","content":"kept 2"}',
    )

    with caplog.at_level(logging.WARNING, logger="storage"):
        assert await storage.history.get(SCOPE, "gpt") == [
            ("user", "kept 1"),
            ("assistant", "kept 2"),
        ]
    assert any(key in record.getMessage() for record in caplog.records)


# --- chat preferences -------------------------------------------------------------------------


async def test_chat_prefs_default_to_none_and_are_per_scope(storage: Storage) -> None:
    prefs = storage.chat_prefs
    assert await prefs.get(SCOPE) == ChatPrefs(agent=None, mode=None, language=None)

    await prefs.set_agent(SCOPE, "support")
    await prefs.set_mode(SCOPE, "all")
    await prefs.set_language(SCOPE, "ru")
    await prefs.set_agent(TOPIC, "docs")

    assert await prefs.get(SCOPE) == ChatPrefs(agent="support", mode="all", language="ru")
    assert await prefs.get(TOPIC) == ChatPrefs(agent="docs")
    assert await prefs.get(OTHER_CHAT) == ChatPrefs()
    assert await prefs.get(OTHER_BOT) == ChatPrefs()


async def test_chat_prefs_change_and_none_restores_only_that_default(storage: Storage) -> None:
    prefs = storage.chat_prefs
    await prefs.set_agent(SCOPE, "support")
    await prefs.set_mode(SCOPE, "mention")
    await prefs.set_language(SCOPE, "en")

    await prefs.set_agent(SCOPE, "docs")
    await prefs.set_mode(SCOPE, None)
    assert await prefs.get(SCOPE) == ChatPrefs(agent="docs", mode=None, language="en")

    await prefs.set_agent(SCOPE, None)
    await prefs.set_language(SCOPE, "zh")
    assert await prefs.get(SCOPE) == ChatPrefs(language="zh")

    await prefs.set_language(SCOPE, None)
    await prefs.set_mode(TOPIC, None)  # removing what was never set is fine
    assert await prefs.get(SCOPE) == ChatPrefs()


async def test_chat_prefs_survive_a_new_connection_and_never_expire(
    redis_factory: RedisFactory, storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    await storage.chat_prefs.set_agent(TOPIC, "support")
    await storage.chat_prefs.set_mode(TOPIC, "all")

    restarted = Storage.on_redis(await redis_factory(), keyspace)

    assert await restarted.chat_prefs.get(TOPIC) == ChatPrefs(agent="support", mode="all")
    assert await redis_client.ttl(keyspace.chat_prefs(TOPIC)) == -1  # exists, no expiry


async def test_chat_prefs_reject_unusable_values(storage: Storage) -> None:
    with pytest.raises(ValueError, match="mode"):
        await storage.chat_prefs.set_mode(SCOPE, "sometimes")
    with pytest.raises(ValueError, match="agent"):
        await storage.chat_prefs.set_agent(SCOPE, "")
    with pytest.raises(ValueError, match="language"):
        await storage.chat_prefs.set_language(SCOPE, "")

    assert await storage.chat_prefs.get(SCOPE) == ChatPrefs()


async def test_unusable_stored_prefs_read_as_default_with_a_warning(
    storage: Storage,
    redis_client: Redis,
    keyspace: KeySpace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = keyspace.chat_prefs(SCOPE)
    await redis_client.hset(
        key, mapping={"agent": "support", "mode": "sometimes", "language": "", "later": "x"}
    )

    with caplog.at_level(logging.WARNING, logger="storage"):
        assert await storage.chat_prefs.get(SCOPE) == ChatPrefs(agent="support")
    messages = [record.getMessage() for record in caplog.records]
    assert any("sometimes" in message and key in message for message in messages)
    assert any("language" in message and key in message for message in messages)


# --- rate limits ------------------------------------------------------------------------------


async def test_rate_limit_lets_exactly_limit_messages_through_per_window(storage: Storage) -> None:
    hit = storage.rate_limits.hit
    assert await hit(BOT, USER, 3, 10.0, T0) == 0.0
    assert await hit(BOT, USER, 3, 10.0, T0 + 1) == 0.0
    assert await hit(BOT, USER, 3, 10.0, T0 + 2) == 0.0

    # The 4th must wait until the first leaves the window (T0 + 10).
    assert await hit(BOT, USER, 3, 10.0, T0 + 3) == pytest.approx(7.0, abs=1e-6)
    # A refused message is not counted: the wait still runs from the first message.
    assert await hit(BOT, USER, 3, 10.0, T0 + 4) == pytest.approx(6.0, abs=1e-6)

    assert await hit(BOT, USER, 3, 10.0, T0 + 10) == 0.0  # the first has left the window
    assert await hit(BOT, USER, 3, 10.0, T0 + 10.5) == pytest.approx(0.5, abs=1e-6)
    assert await hit(BOT, USER, 3, 10.0, T0 + 11) == 0.0  # the second has left too
    assert await hit(BOT, USER, 3, 10.0, T0 + 11) > 0.0


async def test_rate_limit_is_per_user_and_per_bot(storage: Storage) -> None:
    hit = storage.rate_limits.hit
    assert await hit(BOT, USER, 1, 60.0, T0) == 0.0
    assert await hit(BOT, USER, 1, 60.0, T0) == pytest.approx(60.0, abs=1e-6)

    assert await hit(BOT, USER + 1, 1, 60.0, T0) == 0.0
    assert await hit(BOT + 1, USER, 1, 60.0, T0) == 0.0


async def test_rate_limit_wait_when_more_than_limit_are_counted(storage: Storage) -> None:
    hit = storage.rate_limits.hit
    for n in range(5):
        assert await hit(BOT, USER, 5, 100.0, T0 + n) == 0.0

    # An operator lowers the limit to 2: the user may write once only one message remains
    # counted, i.e. when the 4th (sent at T0 + 3) has left the window.
    assert await hit(BOT, USER, 2, 100.0, T0 + 10) == pytest.approx(93.0, abs=1e-6)


async def test_two_replicas_share_one_budget(
    redis_factory: RedisFactory, storage: Storage, keyspace: KeySpace
) -> None:
    other_replica = Storage.on_redis(await redis_factory(), keyspace)
    replicas = (storage.rate_limits, other_replica.rate_limits)

    # Alternating replicas, one after another.
    waits = [await replicas[n % 2].hit(BOT, USER, 4, 30.0, T0 + n) for n in range(6)]
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert waits[4] == pytest.approx(26.0, abs=1e-6)
    assert waits[5] == pytest.approx(25.0, abs=1e-6)

    # All at once, for other users: exactly `limit` get through, even at the same instant.
    # (Several bursts, so a race that a lucky schedule hides once still shows.)
    for user in range(USER + 1, USER + 6):
        waits = await asyncio.gather(
            *(replicas[n % 2].hit(BOT, user, 4, 30.0, T0) for n in range(10))
        )
        assert waits.count(0.0) == 4
        assert all(wait == pytest.approx(30.0, abs=1e-6) for wait in waits if wait)


async def test_rate_budget_expires_one_window_after_the_last_counted_message(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    await storage.rate_limits.hit(BOT, USER, 2, 45.5, T0)

    assert 45_000 < await redis_client.pttl(keyspace.rate(BOT, USER)) <= 45_500


async def test_rate_limit_rejects_a_meaningless_budget(storage: Storage) -> None:
    with pytest.raises(ValueError, match="limit"):
        await storage.rate_limits.hit(BOT, USER, 0, 10.0, T0)
    with pytest.raises(ValueError, match="window"):
        await storage.rate_limits.hit(BOT, USER, 1, 0.0, T0)


# --- the bot-wide Telegram budget ------------------------------------------------------------


async def test_bot_budget_allows_a_burst_up_to_the_limit_then_frees_as_calls_age(
    storage: Storage,
) -> None:
    async def take(now: float, want: int, bot: int = BOT) -> tuple[int, float]:
        calls, free_at = await storage.bot_budget.take(bot, now, want, 30, 1.0)
        assert len(set(calls)) == len(calls), "every call has its own name"
        return len(calls), free_at

    assert await take(T0, 20) == (20, T0)
    taken, free_at = await take(T0 + 0.5, 20)
    assert taken == 10, "only 30 in any second"
    assert free_at == pytest.approx(T0 + 1.0, abs=1e-6), "when the first burst leaves the window"
    assert (await take(T0 + 0.99, 1))[0] == 0
    assert (await take(T0 + 1.0, 30))[0] == 20, "the first 20 have aged out"
    assert (await take(T0 + 1.5, 30))[0] == 10
    assert (await take(T0 + 1.5, 30, bot=BOT + 1))[0] == 30, "bots do not share budgets"


async def test_bot_budget_is_shared_by_replicas_taking_at_the_same_instant(
    redis_factory: RedisFactory, storage: Storage, keyspace: KeySpace
) -> None:
    other_replica = Storage.on_redis(await redis_factory(), keyspace)
    budgets = (storage.bot_budget, other_replica.bot_budget)

    for second in range(5):  # several bursts, so a race a lucky schedule hides once still shows
        now = T0 + 10 * second
        results = await asyncio.gather(
            *(budgets[n % 2].take(BOT, now, 3, 30, 1.0) for n in range(40))
        )
        assert sum(len(calls) for calls, _ in results) == 30
        assert len({call for calls, _ in results for call in calls}) == 30
        short = [free_at for calls, free_at in results if len(calls) < 3]
        assert all(free_at == pytest.approx(now + 1.0, abs=1e-6) for free_at in short)


async def test_bot_budget_counts_a_postponed_call_from_when_it_went_out(storage: Storage) -> None:
    budget = storage.bot_budget
    calls, _ = await budget.take(BOT, T0, 30, 30, 1.0)

    await budget.postpone(BOT, calls[:10], T0 + 0.4)  # these went out 0.4 s late

    taken, free_at = await budget.take(BOT, T0 + 1.0, 30, 30, 1.0)
    assert len(taken) == 20
    assert free_at == pytest.approx(T0 + 1.4, abs=1e-6)
    await budget.postpone(BOT, calls[10:11], T0 + 5)  # aged out at T0 + 1: stays out
    assert len((await budget.take(BOT, T0 + 1.4, 30, 30, 1.0))[0]) == 10


async def test_bot_budget_key_expires_soon_after_the_last_call(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    await storage.bot_budget.take(BOT, T0, 1, 30, 1.02)

    assert 1_000 < await redis_client.pttl(keyspace.bot_budget(BOT)) <= 2_040


# --- stats ------------------------------------------------------------------------------------


async def test_stats_count_outcomes_and_take_medians_only_inside_the_window(
    storage: Storage,
) -> None:
    stats = storage.stats

    async def answer(at: float, first: float | None, total: float, outcome: str = "ok") -> None:
        await stats.record_answer(
            BOT, "support", at=at, first_text_s=first, total_s=total, outcome=outcome
        )

    await answer(T0 - 100, 50.0, 500.0)  # before the window
    await answer(T0, 1.0, 4.0)  # at `since`: inside
    await answer(T0 + 10, 2.0, 6.0)
    await answer(T0 + 20, None, 3.0, "error")  # no text ever came
    await answer(T0 + 30, 4.0, 9.0, "stopped")
    await answer(T0 + 60, 70.0, 700.0)  # at `until`: outside

    assert await stats.summary(BOT, "support", since=T0, until=T0 + 60) == AgentStats(
        answers=4,
        errors=1,
        stopped=1,
        likes=0,
        dislikes=0,
        like_ratio=None,
        median_first_text_s=2.0,  # of 1, 2, 4
        median_total_s=5.0,  # of 3, 4, 6, 9
    )
    assert await stats.summary(BOT, "support", since=T0 + 15, until=T0 + 25) == AgentStats(
        answers=1, errors=1, median_first_text_s=None, median_total_s=3.0
    )
    assert await stats.summary(BOT, "support", since=T0 + 1000, until=T0 + 2000) == AgentStats()


async def test_stats_are_per_agent_and_per_bot(storage: Storage) -> None:
    stats = storage.stats
    await stats.record_answer(BOT, "support", at=T0, first_text_s=1.0, total_s=2.0, outcome="ok")
    await stats.record_rating(BOT, "support", at=T0, old=None, new="like")

    assert await stats.summary(BOT, "docs", since=T0, until=T0 + 1) == AgentStats()
    assert await stats.summary(BOT + 1, "support", since=T0, until=T0 + 1) == AgentStats()
    assert (await stats.summary(BOT, "support", since=T0, until=T0 + 1)).answers == 1


async def test_identical_answers_at_the_same_moment_both_count(storage: Storage) -> None:
    for _ in range(2):
        await storage.stats.record_answer(
            BOT, "support", at=T0, first_text_s=1.0, total_s=2.0, outcome="ok"
        )

    assert (await storage.stats.summary(BOT, "support", since=T0, until=T0 + 1)).answers == 2


async def test_rating_changes_count_as_net_changes(storage: Storage) -> None:
    stats = storage.stats

    async def summary() -> AgentStats:
        return await stats.summary(BOT, "support", since=T0, until=T0 + 100)

    await stats.record_rating(BOT, "support", at=T0 + 1, old=None, new="like")
    assert await summary() == AgentStats(likes=1, dislikes=0, like_ratio=1.0)

    await stats.record_rating(BOT, "support", at=T0 + 2, old="like", new="dislike")
    assert await summary() == AgentStats(likes=0, dislikes=1, like_ratio=0.0)

    await stats.record_rating(BOT, "support", at=T0 + 3, old=None, new="like")
    await stats.record_rating(BOT, "support", at=T0 + 4, old=None, new="like")
    await stats.record_rating(BOT, "support", at=T0 + 5, old="like", new="like")  # no change
    two_to_one = await summary()
    assert (two_to_one.likes, two_to_one.dislikes) == (2, 1)
    assert two_to_one.like_ratio == pytest.approx(2 / 3)

    await stats.record_rating(BOT, "support", at=T0 + 6, old="dislike", new=None)  # cleared
    assert await summary() == AgentStats(likes=2, dislikes=0, like_ratio=1.0)


async def test_rating_withdrawn_in_the_window_never_counts_below_zero(storage: Storage) -> None:
    stats = storage.stats
    await stats.record_rating(BOT, "support", at=T0 - 50, old=None, new="like")  # before
    await stats.record_rating(BOT, "support", at=T0 + 1, old="like", new="dislike")

    assert await stats.summary(BOT, "support", since=T0, until=T0 + 100) == AgentStats(
        likes=0, dislikes=1, like_ratio=0.0
    )


async def test_stats_forget_samples_older_than_the_retention_and_expire(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    stats = storage.stats
    await stats.record_answer(BOT, "support", at=T0, first_text_s=1.0, total_s=1.0, outcome="ok")
    await stats.record_rating(BOT, "support", at=T0, old=None, new="dislike")
    later = T0 + STATS_RETENTION + DAY
    await stats.record_answer(BOT, "support", at=later, first_text_s=3.0, total_s=3.0, outcome="ok")
    await stats.record_rating(BOT, "support", at=later, old=None, new="like")

    everything = await stats.summary(BOT, "support", since=0.0, until=later + 1)
    assert everything == AgentStats(
        answers=1, likes=1, like_ratio=1.0, median_first_text_s=3.0, median_total_s=3.0
    )
    for key in (keyspace.stats_answers(BOT, "support"), keyspace.stats_ratings(BOT, "support")):
        assert await redis_client.zcard(key) == 1  # the old sample is gone, not just hidden
        assert STATS_RETENTION < await redis_client.ttl(key) <= STATS_TTL


async def test_stats_keep_only_the_newest_samples(redis_client: Redis, keyspace: KeySpace) -> None:
    stats = RedisStatsStore(redis_client, keyspace, max_samples=3)
    for n in range(5):
        await stats.record_answer(
            BOT, "support", at=T0 + n, first_text_s=None, total_s=float(n), outcome="ok"
        )

    summary = await stats.summary(BOT, "support", since=0.0, until=T0 + 10)
    assert summary.answers == 3
    assert summary.median_total_s == 3.0  # of 2, 3, 4


async def test_stats_reject_unknown_outcomes_ratings_and_negative_times(storage: Storage) -> None:
    stats = storage.stats
    with pytest.raises(ValueError, match="outcome"):
        await stats.record_answer(BOT, "a", at=T0, first_text_s=1.0, total_s=1.0, outcome="meh")
    with pytest.raises(ValueError, match="total_s"):
        await stats.record_answer(BOT, "a", at=T0, first_text_s=1.0, total_s=-1.0, outcome="ok")
    with pytest.raises(ValueError, match="first_text_s"):
        await stats.record_answer(
            BOT, "a", at=T0, first_text_s=float("nan"), total_s=1.0, outcome="ok"
        )
    with pytest.raises(ValueError, match="rating"):
        await stats.record_rating(BOT, "a", at=T0, old=None, new="meh")

    assert await stats.summary(BOT, "a", since=0.0, until=T0 + 1) == AgentStats()


async def test_unreadable_stats_samples_are_skipped_with_one_warning(
    storage: Storage,
    redis_client: Redis,
    keyspace: KeySpace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = keyspace.stats_answers(BOT, "support")
    ratings = keyspace.stats_ratings(BOT, "support")
    # Pinned v1 literals (a later release must still read them) next to unreadable members.
    await redis_client.zadd(
        answers,
        {
            '{"v":1,"id":"a1","o":"ok","f":1.5,"t":2.5}': T0,
            '{"v":1,"id":"a2","o":"error","f":null,"t":0.5,"later":1}': T0 + 1,
            "{not json": T0,
            '{"v":2,"id":"a3","o":"ok","f":1,"t":1}': T0,
            '{"v":1,"id":"a4","o":"maybe","f":1,"t":1}': T0,
            '{"v":1,"id":"a5","o":"ok","f":1,"t":"1"}': T0,
        },
    )
    await redis_client.zadd(
        ratings,
        {
            json.dumps({"v": 1, "id": "r1", "e": "+like"}): T0,
            json.dumps({"v": 1, "id": "r2", "e": "+meh"}): T0,
            json.dumps({"v": 1, "id": "r3", "e": "like"}): T0,
        },
    )

    with caplog.at_level(logging.WARNING, logger="storage"):
        summary = await storage.stats.summary(BOT, "support", since=T0, until=T0 + 10)

    assert summary == AgentStats(
        answers=2,
        errors=1,
        likes=1,
        like_ratio=1.0,
        median_first_text_s=1.5,
        median_total_s=1.5,
    )
    warnings = [record.getMessage() for record in caplog.records]
    assert sum(answers in message for message in warnings) == 1
    assert sum(ratings in message for message in warnings) == 1


async def test_stats_recorded_by_two_replicas_add_up(
    redis_factory: RedisFactory, storage: Storage, keyspace: KeySpace
) -> None:
    other_replica = Storage.on_redis(await redis_factory(), keyspace)
    await storage.stats.record_answer(
        BOT, "support", at=T0, first_text_s=1.0, total_s=2.0, outcome="ok"
    )
    await other_replica.stats.record_answer(
        BOT, "support", at=T0 + 1, first_text_s=3.0, total_s=4.0, outcome="stopped"
    )
    await other_replica.stats.record_rating(BOT, "support", at=T0 + 2, old=None, new="like")

    assert await storage.stats.summary(BOT, "support", since=T0, until=T0 + 10) == AgentStats(
        answers=2,
        stopped=1,
        likes=1,
        like_ratio=1.0,
        median_first_text_s=2.0,
        median_total_s=3.0,
    )


# --- key names --------------------------------------------------------------------------------


async def test_every_new_key_is_versioned_and_inside_the_namespace(
    storage: Storage, redis_client: Redis, keyspace: KeySpace
) -> None:
    await storage.history.append(TOPIC, "gpt", exchange(1), keep=10)
    await storage.chat_prefs.set_agent(TOPIC, "gpt")
    await storage.rate_limits.hit(BOT, USER, 5, 60.0, T0)
    await storage.stats.record_answer(BOT, "gpt", at=T0, first_text_s=1, total_s=2, outcome="ok")
    await storage.stats.record_rating(BOT, "gpt", at=T0, old=None, new="like")

    found = {key async for key in redis_client.scan_iter(match=keyspace.match_all)}

    ns = keyspace.namespace
    assert found == {
        f"{ns}:v1:history:{BOT}:{CHAT}:42:gpt",
        f"{ns}:v1:prefs:{BOT}:{CHAT}:42",
        f"{ns}:v1:rate:{BOT}:{USER}",
        f"{ns}:v1:stats:answers:{BOT}:gpt",
        f"{ns}:v1:stats:ratings:{BOT}:gpt",
    }


def test_default_key_names_of_the_new_stores() -> None:
    keys = KeySpace()
    assert keys.history(ChatScope(1, -2), "a:b") == "relaygram:v1:history:1:-2:0:a:b"
    assert keys.chat_prefs(ChatScope(1, -2, 3)) == "relaygram:v1:prefs:1:-2:3"
    assert keys.rate(1, 42) == "relaygram:v1:rate:1:42"
    assert keys.stats_answers(1, "a") == "relaygram:v1:stats:answers:1:a"
    assert keys.stats_ratings(1, "a") == "relaygram:v1:stats:ratings:1:a"
