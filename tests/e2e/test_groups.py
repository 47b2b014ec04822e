"""Groups and forum topics: when the bot answers, topics as conversations, who may stop,
per-person ratings, reply-to branching."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import (
    Harness,
    bot_messages,
    button_data,
    buttons,
    finished,
    slow_access_check,
)
from tests.fakes.dify import Script

GROUP = -100500
FORUM = -100600
OPERATOR = 9001
ASKER, OTHER, ADMIN = 5001, 5002, 5003
USER_CHAT = 1001
MENTION = "@relaygram_test_bot"


@pytest.fixture
async def hg(h: Harness) -> Harness:
    await h.stop()
    await h.start(operators=frozenset({OPERATOR}))
    h.telegram.register_chat(GROUP, "supergroup", title="Team")
    h.telegram.register_chat(FORUM, "supergroup", title="Forum", is_forum=True)
    h.telegram.set_admins(GROUP, {ADMIN})
    return h


def queries(h: Harness) -> list[str]:
    return [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")]


def answers_in(h: Harness, chat: int, thread: int | None = None) -> int:
    return len([m for m in h.telegram.messages(chat, thread) if m.reply_markup])


async def test_mode_all_answers_every_message_and_only_operators_may_set_it(hg: Harness) -> None:
    hg.say("nobody mentioned the bot", chat_id=GROUP, user_id=ASKER)
    hg.say("/mode all", chat_id=GROUP, user_id=ASKER)
    await hg.until(lambda: "This command is for the bot's operators." in hg.texts(GROUP))
    await hg.until_settled()
    hg.say("/mode all", chat_id=GROUP, user_id=OPERATOR)
    await hg.until(lambda: "OK: in this chat I answer every message." in hg.texts(GROUP))
    hg.say("now every message counts", chat_id=GROUP, user_id=ASKER)
    await hg.until(lambda: answers_in(hg, GROUP) == 1)
    assert queries(hg) == ["now every message counts"]

    hg.say("/mode mention", chat_id=GROUP, user_id=OPERATOR)
    await hg.until(lambda: any("when mentioned" in t for t in hg.texts(GROUP)))
    hg.say("ignored again", chat_id=GROUP, user_id=ASKER)
    await hg.until_settled()
    hg.say(f"{MENTION} but this one not", chat_id=GROUP, user_id=ASKER)
    await hg.until(lambda: answers_in(hg, GROUP) == 2)
    assert queries(hg) == ["now every message counts", "but this one not"]


async def test_replying_to_the_bot_is_addressing_it(hg: Harness) -> None:
    hg.say(f"{MENTION} first", chat_id=GROUP, user_id=ASKER)
    first = await hg.until(lambda: finished(hg, GROUP))
    hg.say(
        "a follow-up by reply", chat_id=GROUP, user_id=OTHER, reply_to_message_id=first.message_id
    )
    await hg.until(lambda: answers_in(hg, GROUP) == 2)
    assert queries(hg) == ["first", "a follow-up by reply"]


async def test_each_forum_topic_is_its_own_conversation_and_replies_stay_in_it(
    hg: Harness,
) -> None:
    for topic in (11, 22):
        hg.say(f"{MENTION} hello topic {topic}", chat_id=FORUM, user_id=ASKER, thread_id=topic)
    await hg.until(lambda: answers_in(hg, FORUM, 11) == 1 and answers_in(hg, FORUM, 22) == 1)
    hg.say(f"{MENTION} again in 11", chat_id=FORUM, user_id=ASKER, thread_id=11)
    await hg.until(lambda: answers_in(hg, FORUM, 11) == 2)

    calls = {
        c.json["query"]: c.json["conversation_id"]
        for c in hg.dify.calls_to("POST", "/chat-messages")
    }
    assert calls["hello topic 11"] == ""
    assert calls["hello topic 22"] == ""
    assert calls["again in 11"] != "", "topic 11 continues its own conversation"
    topic_11 = [m.visible_text for m in hg.telegram.messages(FORUM, 11) if m.reply_markup]
    assert topic_11 == ["Echo: hello topic 11", "Echo: again in 11"], "answers stay in the topic"
    sent = hg.telegram.calls("sendMessage", FORUM)
    assert {r.params.get("message_thread_id") for r in sent} == {11, 22}


async def test_reset_in_a_topic_resets_only_that_topic(hg: Harness) -> None:
    for topic in (11, 22):
        hg.say(f"{MENTION} start {topic}", chat_id=FORUM, user_id=ASKER, thread_id=topic)
    await hg.until(lambda: answers_in(hg, FORUM, 11) == 1 and answers_in(hg, FORUM, 22) == 1)
    hg.say("/reset", chat_id=FORUM, user_id=ASKER, thread_id=11)
    await hg.until(
        lambda: any("new conversation" in m.visible_text for m in hg.telegram.messages(FORUM, 11))
    )
    for topic in (11, 22):
        hg.say(f"{MENTION} next {topic}", chat_id=FORUM, user_id=ASKER, thread_id=topic)
    await hg.until(lambda: answers_in(hg, FORUM, 11) == 2 and answers_in(hg, FORUM, 22) == 2)

    calls = {
        c.json["query"]: c.json["conversation_id"]
        for c in hg.dify.calls_to("POST", "/chat-messages")
    }
    assert calls["next 11"] == ""
    assert calls["next 22"] != ""


@pytest.mark.parametrize(
    ("stopper", "allowed"), [(OTHER, False), (ADMIN, True), (OPERATOR, True), (ASKER, True)]
)
async def test_who_may_stop_someone_elses_answer(hg: Harness, stopper: int, allowed: bool) -> None:
    hg.dify.app.default_script = Script(chunks=[f"w{i} " for i in range(400)], delay=0.01)
    hg.say(f"{MENTION} long", chat_id=GROUP, user_id=ASKER)
    await hg.until(
        lambda: bot_messages(hg, GROUP) and "w2" in bot_messages(hg, GROUP)[-1].visible_text
    )

    hg.say("/stop", chat_id=GROUP, user_id=stopper)
    if allowed:
        final = await hg.until(lambda: finished(hg, GROUP), within=20)
        assert final.visible_text.endswith("⏹ Stopped.")
        assert len(hg.dify.calls_to("POST", "/stop")) == 1
    else:
        notice = "Only the person who asked (or a chat admin) can stop this answer."
        await hg.until(lambda: notice in hg.texts(GROUP))
        assert hg.dify.calls_to("POST", "/stop") == []


async def test_group_ratings_are_per_person_and_the_buttons_show_totals(hg: Harness) -> None:
    hg.say(f"{MENTION} rate me", chat_id=GROUP, user_id=ASKER)
    final = await hg.until(lambda: finished(hg, GROUP))
    like, dislike = button_data(final)[:2]

    def press(user: int, data: str) -> None:
        hg.telegram.push_update(hg.telegram.callback(GROUP, final.message_id, data, user_id=user))

    def shown() -> list[str]:
        message = hg.telegram.message(GROUP, final.message_id)
        return buttons(message)[:2]

    press(ASKER, like)
    await hg.until(lambda: shown() == ["👍 1", "👎"])
    press(ASKER, like)  # the same person twice: taken back, not counted twice
    await hg.until(lambda: shown() == ["👍", "👎"])
    press(ASKER, like)
    press(OTHER, like)
    await hg.until(lambda: shown() == ["👍 2", "👎"])
    press(ADMIN, dislike)
    await hg.until(lambda: shown() == ["👍 2", "👎 1"])

    ratings = [c.json["rating"] for c in hg.dify.calls_to("POST", "/feedbacks")]
    # Dify holds one rating per answer: the group's majority, sent when it changes.
    assert ratings == ["like", None, "like"]
    message_id = next(iter(hg.dify.messages))
    assert hg.dify.ratings()[message_id] == "like"


async def test_replying_to_an_older_answer_says_dify_continues_the_latest(hg: Harness) -> None:
    hg.say("first", chat_id=USER_CHAT)
    first = await hg.until(lambda: finished(hg, USER_CHAT))
    hg.say("second", chat_id=USER_CHAT)
    await hg.until(lambda: answers_in(hg, USER_CHAT) == 2)
    await hg.until_idle(USER_CHAT)

    hg.say("back to the first", chat_id=USER_CHAT, reply_to_message_id=first.message_id)
    await hg.until(lambda: answers_in(hg, USER_CHAT) == 3)
    assert any("can only continue from its latest answer" in t for t in hg.texts(USER_CHAT))
    conversation = hg.dify.calls_to("POST", "/chat-messages")[2].json["conversation_id"]
    assert conversation != "", "the latest conversation continues"


async def test_a_reply_thread_keeps_its_place_in_the_groups_order(
    hg: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside a forum, message_thread_id marks a reply thread, which belongs to the group's
    # conversation: a message in it is answered after the one sent before it, even when the
    # earlier one's access check is the slower (aiogram handles a batch concurrently).
    slow_access_check(monkeypatch, lambda question: question.endswith("first"))
    hg.say(f"{MENTION} first", chat_id=GROUP, user_id=ASKER)
    hg.say(f"{MENTION} second", chat_id=GROUP, user_id=OTHER, thread_id=77)
    await hg.until(lambda: len(queries(hg)) == 2)
    await hg.until_settled()

    assert queries(hg) == ["first", "second"]
