"""Streaming at Telegram's limits: drafts in private chats, send + edit in groups, 429 storms."""

from __future__ import annotations

import asyncio
import logging

import fakeredis
import pytest

from bot.streaming.clock import ScaledClock
from storage import Storage
from tests.e2e.conftest import (
    BOT_ID,
    BOT_TOKEN,
    Harness,
    bot_messages,
    button_data,
    buttons,
    finished,
)
from tests.fakes.dify import Script
from tests.fakes.telegram import FakeTelegram, FloodLimits

GROUP = -100777
ASKER = 5005
OTHER = 6006


@pytest.fixture
async def hd(h: Harness) -> Harness:
    """`h`, restarted with the default STREAM_MODE (auto: drafts in private chats)."""
    await h.stop()
    await h.start(stream_mode="auto")
    return h


def chat_calls(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [r.method for r in telegram.requests if r.chat_id == chat_id]


async def test_private_chat_streams_a_draft_then_persists_the_answer(hd: Harness) -> None:
    words = [f"w{i} " for i in range(30)]
    # The agent thinks a while before its first word: the placeholder shows meanwhile.
    hd.dify.app.default_script = Script(chunks=words, delay=0.02, first_delay=0.5)

    hd.say("draft please")
    final = await hd.until(lambda: finished(hd))

    drafts = hd.telegram.calls("sendMessageDraft", hd.user_id)
    assert len(drafts) >= 3, "the answer grew in a draft"
    assert drafts[0].params.get("text", "") == "", "first the 'Thinking…' placeholder"
    assert {d.params["draft_id"] for d in drafts} == {drafts[0].params["draft_id"]}, "one id"
    assert all(d.params.get("can_stop") for d in drafts), "Telegram's stop button is offered"
    assert hd.telegram.calls("editMessageText", hd.user_id) == []
    assert len(bot_messages(hd)) == 1
    assert final.visible_text == "".join(words).strip()
    assert buttons(final)[:2] == ["👍", "👎"]
    assert hd.telegram.draft(hd.user_id) is None, "sending the answer cleared the draft"


async def test_long_answer_in_draft_mode_is_persisted_page_by_page(hd: Harness) -> None:
    answer = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 8 for i in range(45))
    hd.dify.app.default_script = Script(
        chunks=[answer[i : i + 200] for i in range(0, len(answer), 200)], delay=0.002
    )

    hd.say("long")
    await hd.until(lambda: finished(hd), within=20)

    messages = bot_messages(hd)
    assert len(messages) >= 3
    shown = "\n\n".join(m.visible_text for m in messages)
    assert " ".join(shown.split()) == " ".join(answer.split())
    assert all(m.reply_markup is None for m in messages[:-1]), "buttons only under the last"


async def test_draft_stop_button_stops_the_agent(hd: Harness) -> None:
    hd.dify.app.default_script = Script(chunks=[f"part{i} " for i in range(300)], delay=0.02)

    hd.say("go on and on")
    draft = await hd.until(
        lambda: (d := hd.telegram.draft(hd.user_id)) is not None and "part3" in d.text and d
    )
    hd.telegram.push_update(hd.telegram.stopped_generation(hd.user_id, draft.draft_id))
    final = await hd.until(lambda: finished(hd))

    stops = hd.dify.calls_to("POST", "/stop")
    assert len(stops) == 1
    assert stops[0].json == {"user": f"tg-{hd.user_id}"}
    assert final.visible_text.startswith("part0 part1 part2 part3")
    assert final.visible_text.endswith("⏹ Stopped.")


async def test_drafts_rejected_by_the_server_fall_back_to_edits_logged_once(
    hd: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    hd.telegram.drafts_supported = False
    hd.dify.app.default_script = Script(chunks=[f"x{i} " for i in range(20)], delay=0.02)

    hd.say("first")
    await hd.until(lambda: finished(hd))
    hd.say("second")
    await hd.until(lambda: len([m for m in bot_messages(hd) if m.reply_markup]) == 2)
    await hd.until(lambda: finished(hd))

    expected = " ".join(f"x{i}" for i in range(20))
    assert [m.visible_text for m in bot_messages(hd)] == [expected, expected]
    assert len(hd.telegram.calls("sendMessageDraft", hd.user_id)) == 1, "tried once, then never"
    assert hd.telegram.calls("editMessageText", hd.user_id), "fell back to send + edit"
    rejected = [r for r in caplog.records if "rejects drafts" in r.getMessage()]
    assert len(rejected) == 1


async def test_group_answer_is_edited_at_the_group_pace_with_a_stop_button(h: Harness) -> None:
    h.telegram.register_chat(GROUP, "supergroup", title="Team")
    h.dify.app.default_script = Script(chunks=[f"g{i} " for i in range(150)], delay=0.01)

    h.say("@relaygram_test_bot explain", chat_id=GROUP, user_id=ASKER)
    growing = await h.until(
        lambda: (m := bot_messages(h, GROUP)) and "⏹ Stop" in buttons(m[-1]) and m[-1]
    )
    assert growing.reply_to_message_id is not None, "the answer replies to the question"
    final = await h.until(lambda: finished(h, GROUP), within=30)

    assert final.visible_text == " ".join(f"g{i}" for i in range(150))
    times = [r.time for r in h.telegram.requests if r.chat_id == GROUP and r.ok]
    for i, start in enumerate(times):
        assert len([t for t in times[i:] if t - start < 60.0]) <= 20, "20 per minute per group"
    assert all(r.status != 429 for r in h.telegram.requests if r.chat_id == GROUP)
    asked = h.dify.calls_to("POST", "/chat-messages")[0].json
    assert asked["query"] == "explain", "the mention is not part of the question"
    assert asked["user"] == f"tg-chat-{GROUP}", "the group's conversation belongs to the group"


async def test_group_stop_button_only_stops_for_the_asker(h: Harness) -> None:
    h.telegram.register_chat(GROUP, "supergroup", title="Team")
    h.dify.app.default_script = Script(chunks=[f"s{i} " for i in range(400)], delay=0.01)

    h.say("@relaygram_test_bot talk", chat_id=GROUP, user_id=ASKER)
    growing = await h.until(
        lambda: (m := bot_messages(h, GROUP)) and "⏹ Stop" in buttons(m[-1]) and m[-1]
    )
    stop = button_data(growing)[0]
    h.telegram.push_update(h.telegram.callback(GROUP, growing.message_id, stop, user_id=OTHER))
    await h.until(
        lambda: (
            "Only the person who asked (or a chat admin) can stop this answer."
            in h.callback_answers()
        )
    )
    assert h.dify.calls_to("POST", "/stop") == []

    h.telegram.push_update(h.telegram.callback(GROUP, growing.message_id, stop, user_id=ASKER))
    final = await h.until(lambda: finished(h, GROUP), within=30)
    assert final.visible_text.endswith("⏹ Stopped.")
    assert len(h.dify.calls_to("POST", "/stop")) == 1


async def test_group_messages_not_addressed_to_the_bot_are_ignored(h: Harness) -> None:
    h.telegram.register_chat(GROUP, "supergroup", title="Team")
    h.say("just chatting among humans", chat_id=GROUP, user_id=ASKER)
    h.say("@relaygram_test_bot hi", chat_id=GROUP, user_id=ASKER)
    await h.until(lambda: finished(h, GROUP))
    assert [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")] == ["hi"]


async def test_a_429_storm_loses_no_final_text(h: Harness) -> None:
    words = [f"z{i} " for i in range(80)]
    h.dify.app.default_script = Script(chunks=words, delay=0.005)
    h.telegram.fail_next("editMessageText", status=429, retry_after=1, times=4, chat_id=h.user_id)

    h.say("storm")
    final = await h.until(lambda: finished(h), within=30)

    assert final.visible_text == "".join(words).strip()
    assert len([r for r in h.telegram.requests if r.status == 429]) == 4
    assert h.telegram.violations_during_penalty == 0


async def run_two_replicas(
    telegram: FakeTelegram, h: Harness, clock: ScaledClock, *, shared: bool
) -> None:
    """Two bot processes of one bot, each answering 20 private chats at once."""
    server = fakeredis.FakeServer()
    replicas = []
    for _ in range(2):
        store = server if shared else fakeredis.FakeServer()
        redis = fakeredis.FakeAsyncRedis(server=store, decode_responses=True)
        replica = Harness(telegram, h.dify, clock, Storage.on_redis(redis))
        await replica.start(poll=False)
        replicas.append(replica)
    h.dify.app.default_script = Script(chunks=[f"r{i} " for i in range(40)], delay=0.01)
    tasks = []
    for chat in range(40):
        update = telegram.user_text(10_000 + chat, f"question {chat}")
        tasks.append(replicas[chat % 2].deliver(update))
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for replica in replicas:
        await replica.stop()


def busiest_second(telegram: FakeTelegram) -> int:
    times = sorted(r.time for r in telegram.requests if r.method != "getUpdates")
    return max(len([t for t in times[i:] if t - start < 1.0]) for i, start in enumerate(times))


@pytest.fixture
def slow_clock() -> ScaledClock:
    # At 20x, one real millisecond of event-loop jitter is 20 bot milliseconds, more than the
    # bot-wide budget's headroom per call; 2x keeps the jitter small, as it is in real time,
    # even on a busy machine.
    return ScaledClock(2)


@pytest.fixture
def slow_telegram(slow_clock: ScaledClock) -> FakeTelegram:
    return FakeTelegram(
        bot_id=BOT_ID, token=BOT_TOKEN, clock=slow_clock.now, limits=FloodLimits.telegram()
    )


async def test_two_bot_processes_on_one_redis_stay_inside_the_shared_budget(
    h: Harness, slow_telegram: FakeTelegram, slow_clock: ScaledClock
) -> None:
    await h.stop()  # this test runs its own two replicas
    telegram = slow_telegram
    await run_two_replicas(telegram, h, slow_clock, shared=True)

    assert [r for r in telegram.requests if r.status == 429] == []
    assert busiest_second(telegram) <= 30
    answers = [telegram.messages(10_000 + chat) for chat in range(40)]
    assert all(m and m[-1].visible_text.endswith("r39") for m in answers), "every answer landed"


async def test_without_a_shared_budget_two_processes_would_exceed_it(
    h: Harness, slow_telegram: FakeTelegram, slow_clock: ScaledClock
) -> None:
    """The control for the test above: the same load, each process pacing itself alone."""
    await h.stop()
    telegram = slow_telegram
    await run_two_replicas(telegram, h, slow_clock, shared=False)

    assert [r for r in telegram.requests if r.status == 429], "two budgets add up past the limit"


async def test_stream_mode_draft_keeps_trying_drafts_for_each_answer(h: Harness) -> None:
    await h.stop()
    await h.start(stream_mode="draft")
    h.telegram.drafts_supported = False
    h.dify.app.default_script = Script(chunks=None, first_delay=0.1, delay=0.05)

    h.say("first")
    await h.until(lambda: finished(h))
    h.say("second")
    await h.until(lambda: len(bot_messages(h)) == 2 and finished(h))

    assert len(h.telegram.calls("sendMessageDraft", h.user_id)) == 2, "one try per answer"
    assert [m.visible_text for m in bot_messages(h)] == ["Echo: first", "Echo: second"]
