"""Operators and access: agent switching, /stats, /reload, allowlists, rate and length limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest

from bot.config import AgentsConfig, ConfigError, parse_agents
from tests.e2e.conftest import DIFY_KEY, Harness, bot_messages, button_data, buttons, finished
from tests.fakes.dify import FakeApp

OPERATOR = 9001
USER = 1001
SALES_KEY = "app-sales"


def two_agents(**extra: Any) -> AgentsConfig:
    agents: dict[str, Any] = {
        "support": {
            "platform": "dify",
            "title": "Support",
            "base_url": "http://dify.test/v1",
            "api_key": DIFY_KEY,
        },
        "sales": {
            "platform": "dify",
            "title": "Sales",
            "base_url": "http://dify.test/v1",
            "api_key": SALES_KEY,
        },
    }
    agents.update(extra)
    return parse_agents({"default": "support", "agents": agents}, {})


@pytest.fixture
async def ho(h: Harness) -> Harness:
    """Two agents (two Dify apps), one operator."""
    h.dify.add_app(FakeApp(api_key=SALES_KEY, name="Sales app"))
    await h.stop()
    await h.start(two_agents(), operators=frozenset({OPERATOR}))
    return h


def app_conversations(h: Harness, key: str) -> set[str]:
    return {c.id for c in h.dify.conversations.values() if c.app_key == key}


async def answer(h: Harness, text: str, chat_id: int) -> None:
    count = len([m for m in bot_messages(h, chat_id) if m.reply_markup])
    h.say(text, chat_id=chat_id)
    await h.until(lambda: len([m for m in bot_messages(h, chat_id) if m.reply_markup]) > count)
    await h.until_idle(chat_id)


async def test_operator_commands_are_refused_to_everyone_else(ho: Harness) -> None:
    for command in ("/agents", "/agent sales", "/stats", "/reload"):
        ho.say(command, chat_id=USER)
    notice = "This command is for the bot's operators."
    await ho.until(lambda: ho.texts(USER).count(notice) == 4)
    assert all("Support" not in t for t in ho.texts(USER))


async def test_operator_commands_appear_only_in_the_operators_menu(ho: Harness) -> None:
    everyone = [c["command"] for c in ho.telegram.commands({"type": "all_private_chats"})]
    operator = [c["command"] for c in ho.telegram.commands({"type": "chat", "chat_id": OPERATOR})]
    assert "agents" not in everyone
    assert {"agents", "agent", "stats", "reload", "mode"} <= set(operator)
    assert {"start", "help", "reset", "stop"} <= set(operator)


async def test_agents_lists_every_agent_and_marks_the_one_serving_here(ho: Harness) -> None:
    ho.say("/agents", chat_id=OPERATOR)
    listing = await ho.until(lambda: next((t for t in ho.texts(OPERATOR) if "Agents" in t), None))
    assert "▶ support — Support [dify] (default)" in listing
    assert "• sales — Sales [dify]" in listing


async def test_switching_agents_keeps_each_agents_conversation(ho: Harness) -> None:
    chat = OPERATOR
    await answer(ho, "to support 1", chat)
    ho.say("/agent sales", chat_id=chat)
    await ho.until(lambda: any("Sales now serves this chat" in t for t in ho.texts(chat)))
    await answer(ho, "to sales 1", chat)
    await answer(ho, "to sales 2", chat)
    ho.say("/agent support", chat_id=chat)
    await ho.until(lambda: any("Support now serves this chat" in t for t in ho.texts(chat)))
    await answer(ho, "to support 2", chat)

    calls = ho.dify.calls_to("POST", "/chat-messages")
    by_query = {c.json["query"]: c.json["conversation_id"] for c in calls}
    support = app_conversations(ho, DIFY_KEY)
    sales = app_conversations(ho, SALES_KEY)
    assert len(support) == 1
    assert len(sales) == 1
    assert by_query["to support 1"] == ""
    assert by_query["to sales 1"] == "", "a new agent starts its own conversation"
    assert by_query["to sales 2"] in sales
    assert by_query["to support 2"] in support, "switching back continues where it left off"


async def test_agent_without_a_name_offers_buttons_and_a_press_switches(ho: Harness) -> None:
    ho.say("/agent", chat_id=OPERATOR)
    picker = await ho.until(
        lambda: next(
            (m for m in bot_messages(ho, OPERATOR) if "Which agent" in m.visible_text), None
        )
    )
    assert buttons(picker) == ["▶ Support [dify]", "Sales [dify]"]
    ho.telegram.push_update(
        ho.telegram.callback(OPERATOR, picker.message_id, button_data(picker)[1], user_id=OPERATOR)
    )
    await ho.until(lambda: any("Sales now serves" in a for a in ho.callback_answers()))
    await answer(ho, "after the button", OPERATOR)
    assert app_conversations(ho, SALES_KEY), "the sales app answered"


async def test_a_non_operator_pressing_an_agent_button_is_refused(ho: Harness) -> None:
    ho.say("/agent", chat_id=OPERATOR)
    picker = await ho.until(
        lambda: next(
            (m for m in bot_messages(ho, OPERATOR) if "Which agent" in m.visible_text), None
        )
    )
    ho.telegram.push_update(
        ho.telegram.callback(OPERATOR, picker.message_id, button_data(picker)[1], user_id=USER)
    )
    await ho.until(lambda: "This command is for the bot's operators." in ho.callback_answers())
    await answer(ho, "still support", OPERATOR)
    assert not app_conversations(ho, SALES_KEY)


async def test_the_choice_of_agent_survives_a_restart(ho: Harness) -> None:
    ho.say("/agent sales", chat_id=OPERATOR)
    await ho.until(lambda: any("Sales now serves" in t for t in ho.texts(OPERATOR)))
    await ho.stop()
    await ho.start(two_agents(), operators=frozenset({OPERATOR}))
    await answer(ho, "who answers?", OPERATOR)
    assert app_conversations(ho, SALES_KEY)
    assert not app_conversations(ho, DIFY_KEY)


async def test_stats_counts_answers_ratings_and_errors(ho: Harness) -> None:
    await answer(ho, "one", USER)
    await answer(ho, "two", USER)
    final = finished(ho, USER)
    assert final is not None
    ho.press(final.message_id, button_data(final)[0], chat_id=USER)
    await ho.until(lambda: "Thanks for the 👍!" in ho.callback_answers())
    ho.dify.fail_next(500, "boom")
    ho.say("three", chat_id=USER)
    await ho.until(lambda: any("can't be reached" in t for t in ho.texts(USER)))
    await ho.until_idle(USER)

    ho.say("/stats 24h", chat_id=OPERATOR)
    report = await ho.until(lambda: next((t for t in ho.texts(OPERATOR) if "📊" in t), None))
    assert "Support [support]: 3 answers, 1 errors, 0 stopped; 👍 1 👎 0 (100% liked)" in report
    assert "Sales [sales]: 0 answers" in report
    ho.say("/stats forever", chat_id=OPERATOR)
    await ho.until(lambda: any(t.startswith("Usage: /stats") for t in ho.texts(OPERATOR)))


async def test_reload_rejects_a_broken_file_and_keeps_the_old_one(h: Harness) -> None:
    current: list[AgentsConfig | str] = [two_agents()]

    def load() -> AgentsConfig:
        value = current[0]
        if isinstance(value, str):
            raise ConfigError(value)
        return value

    h.dify.add_app(FakeApp(api_key=SALES_KEY))
    await h.stop()
    await h.start(two_agents(), operators=frozenset({OPERATOR}), agents_loader=load)

    current[0] = "agents.toml: agents.sales.base_url: must start with http:// or https://"
    h.say("/reload", chat_id=OPERATOR)
    await h.until(lambda: any("was rejected" in t for t in h.texts(OPERATOR)))
    assert any("agents.sales.base_url" in t for t in h.texts(OPERATOR))
    await answer(h, "still working", OPERATOR)

    current[0] = parse_agents(
        {
            "default": "sales",
            "agents": {
                "sales": {
                    "platform": "dify",
                    "title": "Sales",
                    "base_url": "http://dify.test/v1",
                    "api_key": SALES_KEY,
                }
            },
        },
        {},
    )
    h.say("/reload", chat_id=OPERATOR)
    await h.until(lambda: "✅ Agents file reloaded: sales." in h.texts(OPERATOR))
    await answer(h, "after reload", OPERATOR)
    assert app_conversations(h, SALES_KEY), "the new default answers"


async def test_strangers_get_one_polite_refusal_and_nothing_else(h: Harness) -> None:
    await h.stop()
    await h.start(allowed_users=frozenset({USER}), operators=frozenset({OPERATOR}))
    stranger = 4444
    refusal = "Sorry, this bot is private. Ask its operator for access."

    h.say("hello?", chat_id=stranger)
    await h.until(lambda: h.texts(stranger) == [refusal])
    h.say("hello again?", chat_id=stranger)
    await answer(h, "I am allowed", USER)
    await answer(h, "operators always are", OPERATOR)

    assert h.texts(stranger) == [refusal], "refused once, then silence"
    queries = [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")]
    assert queries == ["I am allowed", "operators always are"]


async def test_rate_limit_tells_the_user_when_to_write_again(h: Harness) -> None:
    await h.stop()
    await h.start(rate_limit_per_minute=2)
    await answer(h, "one", USER)
    await answer(h, "two", USER)
    h.say("three", chat_id=USER)
    notice = await h.until(lambda: next((t for t in h.texts(USER) if "faster" in t), None))
    assert "Please wait" in notice
    seconds = int(notice.split("wait ")[1].split(" s")[0])
    assert 1 <= seconds <= 60
    assert [c.json["query"] for c in h.dify.calls_to("POST", "/chat-messages")] == ["one", "two"]


async def test_too_long_messages_are_refused_with_the_limit_named(h: Harness) -> None:
    await h.stop()
    await h.start(max_message_length=50)
    h.say("x" * 51, chat_id=USER)
    await h.until(lambda: any("the limit is 50" in t for t in h.texts(USER)))
    assert h.dify.calls_to("POST", "/chat-messages") == []


async def test_sighup_reloads_the_agents_file(h: Harness) -> None:
    """`kill -HUP` does what /reload does, for a bot run with `relaygram run`."""
    current = [two_agents()]
    h.dify.add_app(FakeApp(api_key=SALES_KEY))
    await h.stop()
    app = await h.start(current[0], poll=False, agents_loader=lambda: current[0])
    polls = len(h.telegram.calls("getUpdates"))
    running = asyncio.create_task(app.run_polling())
    try:
        await h.until(lambda: len(h.telegram.calls("getUpdates")) > polls)
        assert app.agents.names() == ["support", "sales"]
        current[0] = parse_agents(
            {
                "default": "sales",
                "agents": {
                    "sales": {
                        "platform": "dify",
                        "base_url": "http://dify.test/v1",
                        "api_key": SALES_KEY,
                    }
                },
            },
            {},
        )
        os.kill(os.getpid(), signal.SIGHUP)
        await h.until(lambda: app.agents.names() == ["sales"])
    finally:
        with contextlib.suppress(RuntimeError):
            await app.dispatcher.stop_polling()
        await asyncio.wait_for(running, 30)
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
