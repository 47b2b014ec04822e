"""A user in a private chat, through the real Dispatcher, a fake Bot API and a fake Dify."""

from __future__ import annotations

import pytest
from redis.exceptions import RedisError

from tests.e2e.conftest import DIFY_KEY, Harness, bot_messages, button_data, buttons, finished
from tests.fakes.dify import Script


async def test_answer_streams_into_one_message_edited_in_place(h: Harness) -> None:
    words = [f"word{i} " for i in range(40)]
    h.dify.app.default_script = Script(chunks=words, delay=0.02)  # ~0.4 bot-seconds apart

    h.say("tell me something long")
    final = await h.until(lambda: finished(h))

    assert final.visible_text == "".join(words).strip()
    assert len(bot_messages(h)) == 1, "the answer grows in one message"
    edits = h.telegram.calls("editMessageText", h.user_id)
    assert len(edits) >= 3, "the text was shown while it was still arriving"
    texts = [e.params["text"] for e in edits]
    assert len(set(texts)) == len(texts), "never the same text twice"
    assert all(r.ok for r in h.telegram.requests if r.method != "getUpdates"), h.telegram.dump()
    # The first text went out before the agent was done (streaming, not one final send).
    first_send = h.telegram.calls("sendMessage", h.user_id)[0]
    assert first_send.params["text"].split() != "".join(words).split()


async def test_edits_stay_within_the_private_chat_pace(h: Harness) -> None:
    h.dify.app.default_script = Script(chunks=[f"w{i} " for i in range(120)], delay=0.005)

    h.say("go")
    await h.until(lambda: finished(h))

    calls = [r for r in h.telegram.requests if r.chat_id == h.user_id and r.method != "getUpdates"]
    times = [r.time for r in calls]
    # Over any window, at most burst (2) + elapsed seconds * 1/s calls.
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t - start < 3.0]
        assert len(in_window) <= 2 + 3, f"{len(in_window)} calls within 3 s: {h.telegram.dump()}"
    assert h.telegram.violations_during_penalty == 0


async def test_final_message_has_rating_and_suggestion_buttons(h: Harness) -> None:
    h.say("hello")
    final = await h.until(lambda: finished(h))

    assert final.visible_text.startswith("Echo: hello")
    assert buttons(final) == [
        "👍",
        "👎",
        "What else can you do?",
        "Tell me more",
        "Give an example",
    ]


async def test_markdown_is_rendered_as_entities(h: Harness) -> None:
    h.dify.app.default_script = Script(chunks=["Here is **bold", "** and `code` and Vec<T>."])

    h.say("format")
    final = await h.until(lambda: finished(h))

    assert final.visible_text == "Here is bold and code and Vec<T>."
    kinds = {e["type"] for e in final.entities or []}
    assert {"bold", "code"} <= kinds


async def test_conversation_continues_and_reset_starts_a_new_one(h: Harness) -> None:
    h.say("first")
    await h.until(lambda: finished(h))
    h.say("second")
    await h.until(lambda: len(h.dify.calls_to("POST", "/chat-messages")) == 2 and finished(h))
    await h.until_idle()
    first, second = (c.json for c in h.dify.calls_to("POST", "/chat-messages"))
    assert first["conversation_id"] == ""
    assert second["conversation_id"] != "", "the second message continues the conversation"
    assert first["user"] == second["user"] == f"tg-{h.user_id}"

    h.say("/reset")
    await h.until(lambda: any("new conversation" in t for t in h.texts()))
    h.say("third")
    await h.until(lambda: len(h.dify.calls_to("POST", "/chat-messages")) == 3)
    await h.until_idle()
    third = h.dify.calls_to("POST", "/chat-messages")[2].json
    assert third["conversation_id"] == "", "after /reset the next message starts fresh"


async def test_new_is_an_alias_of_reset(h: Harness) -> None:
    h.say("/new")
    await h.until(lambda: any("new conversation with Support" in t for t in h.texts()))


async def test_stop_calls_dify_stop_and_keeps_the_partial_text(h: Harness) -> None:
    h.dify.app.default_script = Script(chunks=[f"part{i} " for i in range(200)], delay=0.02)

    h.say("long answer please")
    await h.until(lambda: bot_messages(h) and "part3" in bot_messages(h)[0].visible_text)
    h.say("/stop")
    final = await h.until(lambda: finished(h))

    stops = h.dify.calls_to("POST", "/stop")
    assert len(stops) == 1
    task = next(iter(h.dify.tasks.values()))
    assert stops[0].path.endswith(f"/chat-messages/{task.id}/stop")
    assert stops[0].json == {"user": f"tg-{h.user_id}"}
    assert final.visible_text.startswith("part0 part1 part2 part3")
    assert final.visible_text.endswith("⏹ Stopped.")
    assert "part199" not in final.visible_text
    assert buttons(final)[:2] == ["👍", "👎"], "a stopped answer can still be rated"


async def test_stop_with_nothing_running_says_so(h: Harness) -> None:
    h.say("/stop")
    await h.until(lambda: "There is no answer being written right now." in h.texts())
    assert h.dify.calls_to("POST", "/stop") == []


async def test_like_then_like_again_sends_like_then_null(h: Harness) -> None:
    h.say("rate me")
    final = await h.until(lambda: finished(h))
    like = button_data(final)[0]

    h.press(final.message_id, like)
    await h.until(lambda: h.dify.calls_to("POST", "/feedbacks"))
    await h.until(lambda: "👍 ✓" in buttons(h.telegram.message(h.user_id, final.message_id)))
    h.press(final.message_id, like)
    await h.until(lambda: len(h.dify.calls_to("POST", "/feedbacks")) == 2)
    await h.until(lambda: buttons(h.telegram.message(h.user_id, final.message_id))[0] == "👍")

    first, second = (c.json for c in h.dify.calls_to("POST", "/feedbacks"))
    assert first == {"rating": "like", "user": f"tg-{h.user_id}"}
    assert second == {"rating": None, "user": f"tg-{h.user_id}"}
    message_id = next(iter(h.dify.messages))
    assert h.dify.calls_to("POST", "/feedbacks")[0].path.endswith(
        f"/messages/{message_id}/feedbacks"
    )
    assert "Thanks for the 👍!" in h.callback_answers()
    assert "Your rating was removed." in h.callback_answers()


async def test_dislike_after_like_switches_the_rating(h: Harness) -> None:
    h.say("rate me")
    final = await h.until(lambda: finished(h))
    like, dislike = button_data(final)[:2]

    h.press(final.message_id, like)
    await h.until(lambda: len(h.dify.calls_to("POST", "/feedbacks")) == 1)
    h.press(final.message_id, dislike)
    await h.until(lambda: len(h.dify.calls_to("POST", "/feedbacks")) == 2)
    await h.until(
        lambda: buttons(h.telegram.message(h.user_id, final.message_id))[:2] == ["👍", "👎 ✓"]
    )
    assert h.dify.calls_to("POST", "/feedbacks")[1].json["rating"] == "dislike"


async def test_forged_and_stale_buttons_get_a_short_notice(h: Harness) -> None:
    h.say("hello")
    final = await h.until(lambda: finished(h))

    h.press(final.message_id, "rg1fb:totally-not-a-rating")
    h.press(final.message_id, "garbage")
    await h.until(lambda: h.callback_answers().count("This button is no longer valid.") == 2)

    greeting_id = h.telegram.last_message(h.user_id)
    assert greeting_id is not None
    # A rating button pressed on a message the bot has no record of.
    h.say("/help")
    help_message = await h.until(
        lambda: next((m for m in bot_messages(h) if "/reset" in m.visible_text), None)
    )
    h.press(help_message.message_id, button_data(final)[0])
    await h.until(
        lambda: "I no longer know this answer, so it can't be rated." in h.callback_answers()
    )
    assert h.dify.calls_to("POST", "/feedbacks") == []


async def test_suggested_question_button_asks_it(h: Harness) -> None:
    h.say("hello")
    final = await h.until(lambda: finished(h))
    suggestion = button_data(final)[2]

    h.press(final.message_id, suggestion)
    await h.until(lambda: len(h.dify.calls_to("POST", "/chat-messages")) == 2)
    await h.until(
        lambda: (
            bot_messages(h)[-1].visible_text.startswith("Echo: What else can you do?")
            and finished(h)
        )
    )
    assert "❓ What else can you do?" in h.texts()
    assert h.dify.calls_to("POST", "/chat-messages")[1].json["query"] == "What else can you do?"


async def test_messages_sent_during_an_answer_are_answered_after_it_in_order(h: Harness) -> None:
    h.dify.app.scripts["one"] = Script(chunks=[f"a{i} " for i in range(30)], delay=0.01)

    h.say("one")
    await h.until(lambda: h.dify.calls_to("POST", "/chat-messages"))
    h.say("two")
    h.say("three")
    await h.until(lambda: len(h.dify.calls_to("POST", "/chat-messages")) == 3)
    await h.until(lambda: len([m for m in bot_messages(h) if m.reply_markup]) == 3)

    queries = [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")]
    assert queries == ["one", "two", "three"]
    answers = [m.visible_text for m in bot_messages(h)]
    assert answers[0].startswith("a0 a1")
    assert answers[0].endswith("a29")
    assert answers[1] == "Echo: two"
    assert answers[2] == "Echo: three"


async def test_sticker_and_photo_get_a_text_only_reply(h: Harness) -> None:
    h.telegram.push_update(h.telegram.user_sticker(h.user_id))
    h.telegram.push_update(h.telegram.user_photo(h.user_id, caption="what is this?"))
    notice = "I can read text messages only for now — please send your question as text."
    await h.until(lambda: h.texts().count(notice) == 2)
    assert h.dify.calls == []


async def test_start_names_the_agent_and_commands_are_registered(h: Harness) -> None:
    h.say("/start")
    await h.until(lambda: any("talk to Support" in t for t in h.texts()))
    commands = [c["command"] for c in h.telegram.commands({"type": "all_private_chats"})]
    assert commands == ["start", "help", "reset", "stop", "lang"]


async def test_unknown_conversation_starts_a_new_one_once_and_says_so(h: Harness) -> None:
    h.say("first")
    await h.until(lambda: finished(h))
    # Dify lost the conversation (deleted, or the app was recreated).
    h.dify.conversations.clear()

    h.say("second")
    await h.until(lambda: len(h.dify.calls_to("POST", "/chat-messages")) == 3)
    await h.until(
        lambda: any(m.visible_text == "Echo: second" and m.reply_markup for m in bot_messages(h))
    )
    calls = h.dify.calls_to("POST", "/chat-messages")
    assert calls[1].json["conversation_id"] != ""
    assert calls[2].json["conversation_id"] == ""
    assert any("no longer knows our earlier conversation" in t for t in h.texts())


async def test_dify_auth_error_gives_a_clear_message(h: Harness) -> None:
    h.dify.fail_next(
        401, {"code": "unauthorized", "message": "Access token is invalid", "status": 401}
    )

    h.say("hello")
    text = "⚠️ Support refused the bot's credentials. Please tell the bot's operator."
    await h.until(lambda: text in h.texts())
    assert DIFY_KEY not in "".join(h.texts())
    assert h.telegram.calls("sendMessage", h.user_id)[-1].params.get("reply_markup") is None


async def test_midstream_model_error_keeps_the_partial_text(h: Harness) -> None:
    h.dify.app.default_script = Script(chunks=["Partial ", "answer ", "here"], error_after=2)

    h.say("hello")
    expected = "Partial answer\n\n⚠️ Support's model failed to answer. Please try again."
    await h.until(lambda: expected in h.texts())


async def test_agent_down_gives_a_clear_message(h: Harness) -> None:
    h.dify.fail_next(502, "Bad Gateway")

    h.say("hello")
    await h.until(
        lambda: "⚠️ Support can't be reached right now. Please try again in a minute." in h.texts()
    )


async def test_429_during_streaming_delays_but_never_loses_the_final_text(h: Harness) -> None:
    words = [f"t{i} " for i in range(60)]
    h.dify.app.default_script = Script(chunks=words, delay=0.01)
    h.telegram.fail_next("editMessageText", status=429, retry_after=2, times=1, chat_id=h.user_id)

    h.say("go")
    final = await h.until(lambda: finished(h))

    assert final.visible_text == "".join(words).strip()
    floods = [r for r in h.telegram.requests if r.status == 429]
    assert len(floods) == 1
    assert h.telegram.violations_during_penalty == 0, "nothing was sent during retry_after"
    after = [r for r in h.telegram.requests if r.chat_id == h.user_id and r.time > floods[0].time]
    assert after
    assert after[0].time - floods[0].time >= 2.0 - 0.05


async def test_9000_character_answer_arrives_whole_across_messages(h: Harness) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 6 for i in range(55)]
    answer = "\n\n".join(paragraphs)
    assert len(answer) > 9000
    h.dify.app.default_script = Script(
        chunks=[answer[i : i + 300] for i in range(0, len(answer), 300)]
    )

    h.say("long")
    await h.until(lambda: finished(h), within=20)

    messages = bot_messages(h)
    assert len(messages) >= 3
    assert all(len(m.visible_text.encode("utf-16-le")) // 2 <= 4096 for m in messages)
    shown = "\n\n".join(m.visible_text for m in messages)
    assert " ".join(shown.split()) == " ".join(answer.split()), "nothing is cut off"


async def test_a_storage_failure_after_the_answer_never_replaces_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_save(*args: object, **kwargs: object) -> None:
        raise RedisError("Redis went away")

    monkeypatch.setattr(type(h.storage.answers), "save", broken_save)
    h.say("hello")
    await h.until(lambda: finished(h))
    await h.until_idle()
    assert h.texts() == ["Echo: hello"], "the delivered answer stays as it is"


async def test_a_storage_failure_before_the_answer_is_told_not_swallowed(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_get(*args: object, **kwargs: object) -> None:
        raise RedisError("Redis went away")

    monkeypatch.setattr(type(h.storage.conversations), "get", broken_get)
    h.say("hello")
    sorry = "⚠️ Something went wrong on my side. Please try again."
    await h.until(lambda: sorry in "".join(h.texts()))
    assert h.dify.calls_to("POST", "/chat-messages") == []
