"""Every seed platform through the real Dispatcher: the same chat experience whichever serves it.

One bot with five agents (Dify, the Dify console behind Olares' gateway, Chaindesk, Timeweb's
native API, an OpenAI-compatible endpoint), each a fake behind one httpx MockTransport that
routes by host. Each test picks the platform that serves the chat by setting the agents file's
default, as an operator would, and checks what the user notices and what the platform was sent.
A capability a platform lacks is hidden (no buttons), never faked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from bot.config import AgentsConfig, parse_agents
from bot.streaming.clock import ScaledClock
from storage import ChatScope, Storage
from tests.e2e.conftest import BOT_ID, SPEEDUP, Harness, bot_messages, button_data, buttons
from tests.fakes import chaindesk, dify, dify_console, openai, timeweb
from tests.fakes.router import HostRouter
from tests.fakes.telegram import FakeMessage, FakeTelegram

PLATFORMS = ("dify", "dify-console", "chaindesk", "timeweb", "openai")
STREAMING = ("dify", "dify-console", "chaindesk", "openai")  # Timeweb's native API cannot stream

TITLES = {
    "dify": "Dify Support",
    "dify-console": "Olares Assistant",
    "chaindesk": "Chaindesk Docs",
    "timeweb": "Timeweb Agent",
    "openai": "Compat GPT",
}
HOSTS = {
    "dify": "dify.test",
    "dify-console": "agent.alice.olares.test",
    "chaindesk": "chaindesk.test",
    "timeweb": "timeweb.test",
    "openai": "llm.test",
}
# The secrets, given to the agents file as ${ENV} references, as an operator would.
ENVIRON = {
    "DIFY_KEY": "app-platforms-dify-key",
    "OLARES_COOKIE": "authelia_session=olares-session-cookie",
    "CHAINDESK_KEY": "cd-platforms-org-key",
    "TIMEWEB_TOKEN": "tw-platforms-token",
    "OPENAI_KEY": "sk-platforms-openai-key",
}
STOPPED = "⏹ Stopped."


def agents_file(default: str) -> AgentsConfig:
    """All five agents, as an agents file would declare them; `default` serves every chat."""
    agents: dict[str, dict[str, Any]] = {
        "dify": {
            "platform": "dify",
            "base_url": f"http://{HOSTS['dify']}/v1",
            "api_key": "${DIFY_KEY}",
        },
        "dify-console": {
            "platform": "dify-console",
            # Olares: no token behind the gateway, the SSO edge wants its session cookie.
            "base_url": f"http://{HOSTS['dify-console']}/api/controllers/console/api",
            "app_id": dify_console.DEFAULT_APP_ID,
            "headers": {"Cookie": "${OLARES_COOKIE}"},
        },
        "chaindesk": {
            "platform": "chaindesk",
            # A host without the /agents rewrite: the adapter falls back to /api/agents.
            "base_url": f"http://{HOSTS['chaindesk']}",
            "agent_id": chaindesk.DEFAULT_AGENT_ID,
            "api_key": "${CHAINDESK_KEY}",
        },
        "timeweb": {
            "platform": "timeweb",
            "base_url": f"http://{HOSTS['timeweb']}",
            "agent_id": timeweb.DEFAULT_ACCESS_ID,
            "token": "${TIMEWEB_TOKEN}",
        },
        "openai": {
            "platform": "openai",
            "base_url": f"http://{HOSTS['openai']}/v1",
            "api_key": "${OPENAI_KEY}",
            "model": "agent",
        },
    }
    for name, table in agents.items():
        table["title"] = TITLES[name]
    return parse_agents({"default": default, "agents": agents}, ENVIRON)


@dataclass
class Platforms:
    dify: dify.FakeDify
    console: dify_console.FakeDifyConsole
    chaindesk: chaindesk.FakeChaindesk
    timeweb: timeweb.FakeTimeweb
    openai: openai.FakeOpenAI
    router: HostRouter

    @classmethod
    def create(cls) -> Platforms:
        fake_dify = dify.FakeDify(dify.FakeApp(api_key=ENVIRON["DIFY_KEY"]))
        console = dify_console.FakeDifyConsole(
            dify_console.FakeConsoleApp(),
            token=None,
            cookie=ENVIRON["OLARES_COOKIE"],
            gateway=True,
            # The gateway's 30 s, on the bot's clock (ScaledClock runs SPEEDUP times faster).
            gateway_cut_after=dify_console.GATEWAY_CUT_SECONDS / SPEEDUP,
        )
        fake_chaindesk = chaindesk.FakeChaindesk(
            chaindesk.FakeAgent(private=True, org_key=ENVIRON["CHAINDESK_KEY"]), rewrite=False
        )
        fake_timeweb = timeweb.FakeTimeweb(
            timeweb.FakeAgent(token=ENVIRON["TIMEWEB_TOKEN"]), require_proxy_source=True
        )
        fake_openai = openai.FakeOpenAI(api_key=ENVIRON["OPENAI_KEY"])
        router = HostRouter(
            {
                HOSTS["dify"]: fake_dify,
                HOSTS["dify-console"]: console,
                HOSTS["chaindesk"]: fake_chaindesk,
                HOSTS["timeweb"]: fake_timeweb,
                HOSTS["openai"]: fake_openai,
            }
        )
        return cls(fake_dify, console, fake_chaindesk, fake_timeweb, fake_openai, router)

    def answer_with(self, platform: str, chunks: list[str], delay: float = 0.0) -> None:
        """Every question to `platform` gets this answer, streamed `delay` real seconds apart
        (Timeweb: the whole answer after the time the chunks would have taken)."""
        match platform:
            case "dify":
                self.dify.app.default_script = dify.Script(chunks=chunks, delay=delay)
            case "dify-console":
                self.console.app.default_script = dify.Script(chunks=chunks, delay=delay)
            case "chaindesk":
                self.chaindesk.agent.default_script = chaindesk.Script(chunks=chunks, delay=delay)
            case "timeweb":
                self.timeweb.agent.default_script = timeweb.Script(
                    message="".join(chunks), delay=delay * len(chunks)
                )
            case "openai":
                self.openai.default = openai.Completion(chunks=chunks, delay=delay)


@pytest.fixture
def p() -> Platforms:
    return Platforms.create()


@pytest.fixture
async def hp(telegram: FakeTelegram, clock: ScaledClock, p: Platforms) -> AsyncIterator[Harness]:
    """A harness whose agents are all five fakes; each test starts it with its default."""
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    harness = Harness(
        telegram, p.dify, clock, Storage.on_redis(redis), transport=p.router.transport()
    )
    try:
        yield harness
    finally:
        await harness.stop()
        await redis.aclose()


# --- reading what the user sees ------------------------------------------------------------------


def settled(h: Harness, expected: str) -> FakeMessage | None:
    """The newest bot message once it shows `expected` in its final state: nothing is running
    in the chat any more (so its record is saved) and no ⏹ button is left under it."""
    assert h.app is not None
    messages = bot_messages(h)
    if not messages or h.app.chat_service.is_busy(ChatScope(BOT_ID, h.user_id)):
        return None
    last = messages[-1]
    if expected in last.visible_text and "⏹ Stop" not in buttons(last):
        return last
    return None


async def ask(h: Harness, text: str, expected: str | None = None, **kwargs: Any) -> FakeMessage:
    """Send `text` and wait for its answer (by default the fakes' echo)."""
    h.say(text, **kwargs)
    found: FakeMessage = await h.until(lambda: settled(h, expected or f"Echo: {text}"))
    return found


def entity_text(message: FakeMessage, entity: dict[str, Any]) -> str:
    """The part of the text an entity covers (offsets are UTF-16 code units)."""
    units = message.visible_text.encode("utf-16-le")
    start, length = 2 * entity["offset"], 2 * entity["length"]
    return units[start : start + length].decode("utf-16-le")


def entities(message: FakeMessage, kind: str) -> list[dict[str, Any]]:
    return [e for e in message.entities if e["type"] == kind]


def chat_texts_sent(h: Harness) -> list[str]:
    """Every text the bot sent or edited into the chat, in order."""
    return [
        r.params["text"]
        for r in h.telegram.requests
        if r.chat_id == h.user_id and r.method in ("sendMessage", "editMessageText") and r.ok
    ]


# --- the answer, the conversation, /reset, /stop -------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_the_answer_arrives_as_the_platform_delivers_it(
    hp: Harness, p: Platforms, platform: str
) -> None:
    words = [f"word{i} " for i in range(20)]
    full = "".join(words).strip()
    p.answer_with(platform, words, delay=0.03)  # 0.6 bot-seconds apart
    await hp.start(agents_file(platform))

    final = await ask(hp, "tell me something", expected=full)

    assert final.visible_text == full
    assert len(bot_messages(hp)) == 1
    sent = chat_texts_sent(hp)
    if platform in STREAMING:
        assert sent[0] != full, "the first words were shown before the agent was done"
        assert len(sent) >= 3, "and the text grew in place while it arrived"
    else:
        # Timeweb answers in one piece: "typing…" while the agent works, then the whole answer.
        assert all(text == full for text in sent), "no partial text is ever shown"
        first_text_at = next(r.time for r in hp.telegram.calls("sendMessage", hp.user_id))
        typing = [
            r.time
            for r in hp.telegram.calls("sendChatAction", hp.user_id)
            if r.params.get("action") == "typing"
        ]
        assert len([t for t in typing if t < first_text_at]) >= 2, "typing kept up meanwhile"
    assert set(p.router.hosts()) == {HOSTS[platform]}, "only the chat's agent was asked"


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_the_next_message_continues_and_reset_starts_anew(
    hp: Harness, p: Platforms, platform: str
) -> None:
    await hp.start(agents_file(platform))

    await ask(hp, "first")
    await ask(hp, "second")
    hp.say("/reset")
    await hp.until(lambda: f"new conversation with {TITLES[platform]}." in (hp.texts() or [""])[-1])
    await ask(hp, "third")

    user = f"tg-{hp.user_id}"
    match platform:
        case "dify" | "dify-console":
            fake = p.dify if platform == "dify" else p.console
            first_conversation = next(iter(fake.messages.values())).conversation_id
            sent = [c.json["conversation_id"] for c in fake.calls_to("POST", "/chat-messages")]
            assert sent == ["", first_conversation, ""]
            if platform == "dify":
                assert {c.json["user"] for c in fake.calls_to("POST", "/chat-messages")} == {user}
        case "chaindesk":
            queries = p.chaindesk.queries
            assert [q.sent_conversation_id for q in queries] == [
                None,
                queries[0].conversation_id,
                None,
            ]
            assert {q.sent_visitor_id for q in queries} == {user}
        case "timeweb":
            first_answer = next(m.id for m in p.timeweb.messages.values() if m.question == "first")
            assert p.timeweb.continued_from() == [None, first_answer, None]
        case "openai":
            # The endpoint keeps nothing: the bot sends the earlier turns itself.
            assert p.openai.received == [
                [{"role": "user", "content": "first"}],
                [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "Echo: first"},
                    {"role": "user", "content": "second"},
                ],
                [{"role": "user", "content": "third"}],
            ]


@pytest.mark.parametrize("platform", STREAMING)
async def test_stop_keeps_the_partial_text_and_ends_the_answer_at_the_platform(
    hp: Harness, p: Platforms, platform: str
) -> None:
    p.answer_with(platform, [f"part{i} " for i in range(300)], delay=0.02)
    await hp.start(agents_file(platform))

    hp.say("go on and on")
    await hp.until(lambda: bot_messages(hp) and "part3" in bot_messages(hp)[-1].visible_text)
    hp.say("/stop")
    final = await hp.until(lambda: settled(hp, STOPPED))

    assert final.visible_text.startswith("part0 part1 part2 part3")
    assert final.visible_text.endswith(f"\n\n{STOPPED}")
    assert "part299" not in final.visible_text
    match platform:
        case "dify":
            task = next(iter(p.dify.tasks.values()))
            stops = p.dify.calls_to("POST", "/stop")
            assert [(c.path, c.json) for c in stops] == [
                (f"/v1/chat-messages/{task.id}/stop", {"user": f"tg-{hp.user_id}"})
            ]
        case "dify-console":
            task = next(iter(p.console.tasks.values()))
            app = f"{dify_console.GATEWAY_BASE_PATH}/apps/{dify_console.DEFAULT_APP_ID}"
            stops = p.console.calls_to("POST", "/stop")
            assert [c.path for c in stops] == [f"{app}/chat-messages/{task.id}/stop"]
        case "chaindesk":
            # No stop endpoint: closing the connection aborts the answer (nothing is stored).
            assert [q.outcome for q in p.chaindesk.queries] == ["aborted"]
            assert p.chaindesk.conversations == {}
        case "openai":
            assert [(r.closed_early, r.completed) for r in p.openai.runs] == [(True, False)]


# --- buttons: ratings and suggested questions ----------------------------------------------------

SUGGESTIONS = list(dify.DEFAULT_SUGGESTIONS)
EXPECTED_BUTTONS = {
    "dify": ["👍", "👎", *SUGGESTIONS],
    "dify-console": ["👍", "👎", *SUGGESTIONS],
    "chaindesk": ["👍", "👎"],  # feedback, but no suggested questions
    "timeweb": [],  # neither: no buttons at all
    "openai": [],
}


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_buttons_appear_only_for_what_the_platform_takes(
    hp: Harness, p: Platforms, platform: str
) -> None:
    await hp.start(agents_file(platform))

    final = await ask(hp, "rate me")

    assert buttons(final) == EXPECTED_BUTTONS[platform]
    if not EXPECTED_BUTTONS[platform]:
        assert final.reply_markup is None
        return
    hp.press(final.message_id, button_data(final)[0])
    await hp.until(lambda: buttons(hp.telegram.message(hp.user_id, final.message_id))[0] == "👍 ✓")
    assert "Thanks for the 👍!" in hp.callback_answers()
    match platform:
        case "dify" | "dify-console":
            fake = p.dify if platform == "dify" else p.console
            assert list(fake.ratings().values()) == ["like"]
        case "chaindesk":
            assert list(p.chaindesk.evals().values()) == ["good"]


@pytest.mark.parametrize("platform", ["dify", "dify-console"])
async def test_a_suggested_question_is_asked_on_the_same_platform(
    hp: Harness, p: Platforms, platform: str
) -> None:
    await hp.start(agents_file(platform))
    final = await ask(hp, "hello")

    hp.press(final.message_id, button_data(final)[2])
    await hp.until(lambda: settled(hp, f"Echo: {SUGGESTIONS[0]}"))

    fake = p.dify if platform == "dify" else p.console
    assert [c.json["query"] for c in fake.calls_to("POST", "/chat-messages")] == [
        "hello",
        SUGGESTIONS[0],
    ]


async def test_chaindesk_cannot_take_a_rating_back(hp: Harness, p: Platforms) -> None:
    await hp.start(agents_file("chaindesk"))
    final = await ask(hp, "rate me")
    like = button_data(final)[0]

    hp.press(final.message_id, like)
    await hp.until(lambda: "Thanks for the 👍!" in hp.callback_answers())
    hp.press(final.message_id, like)
    await hp.until(lambda: "Chaindesk Docs cannot take a rating back." in hp.callback_answers())

    evals = p.chaindesk.calls_to("POST", "/api/conversations/eval-answer")
    assert [c.json["eval"] for c in evals] == ["good"], "no second request"
    assert list(p.chaindesk.evals().values()) == ["good"]
    await hp.until(lambda: buttons(hp.telegram.message(hp.user_id, final.message_id))[0] == "👍 ✓")


# --- what platforms add under and above the answer -----------------------------------------------

PRICING = "https://docs.example.com/pricing"
FAQ = "https://docs.example.com/faq"


@pytest.mark.parametrize("platform", ["dify", "dify-console", "chaindesk"])
async def test_sources_are_listed_under_the_answer_with_links(
    hp: Harness, p: Platforms, platform: str
) -> None:
    chunks = ["See ", "the pricing."]
    if platform == "chaindesk":
        sources = [
            {"datasource_id": "ds1", "datasource_name": "Pricing", "source_url": PRICING},
            {"datasource_id": "ds2", "datasource_name": "FAQ", "source_url": FAQ},
        ]
        p.chaindesk.agent.default_script = chaindesk.Script(chunks=chunks, sources=sources)
    else:
        resources = [
            {"position": 1, "document_id": "d1", "document_name": "Pricing", "url": PRICING},
            {
                "position": 2,
                "document_id": "d2",
                "document_name": "FAQ",
                "doc_metadata": {"source_url": FAQ},
            },
        ]
        script = dify.Script(chunks=chunks, retriever_resources=resources)
        (p.dify if platform == "dify" else p.console).app.default_script = script
    await hp.start(agents_file(platform))

    final = await ask(hp, "how much?", expected="Sources")

    assert final.visible_text == "See the pricing.\n\n📚 Sources: 1. Pricing · 2. FAQ"
    links = [(entity_text(final, e), e["url"]) for e in entities(final, "text_link")]
    assert links == [("Pricing", PRICING), ("FAQ", FAQ)]


async def test_timeweb_length_limit_is_noted_under_the_answer(hp: Harness, p: Platforms) -> None:
    # Timeweb's documented spelling.
    p.timeweb.agent.default_script = timeweb.Script(
        message="It goes on and", finish_reason="lenght"
    )
    await hp.start(agents_file("timeweb"))

    final = await ask(hp, "tell me everything", expected="It goes on and")

    note = "✂️ The answer was cut off by the agent's length limit."
    assert final.visible_text == f"It goes on and\n\n{note}"


@pytest.mark.parametrize("platform", ["timeweb", "dify-console"])
async def test_replying_to_an_earlier_answer_continues_from_it(
    hp: Harness, p: Platforms, platform: str
) -> None:
    await hp.start(agents_file(platform))
    first = await ask(hp, "first")
    await ask(hp, "second")

    await ask(hp, "third", reply_to_message_id=first.message_id)
    await ask(hp, "fourth")

    if platform == "timeweb":
        ids = {m.question: m.id for m in p.timeweb.messages.values()}
        assert p.timeweb.continued_from() == [None, ids["first"], ids["first"], ids["third"]]
        thread = [m.question for m in p.timeweb.thread(ids["fourth"])]
        assert thread == ["first", "third", "fourth"], "the agent never saw the other branch"
    else:
        ids = {m.query: m.id for m in p.console.messages.values()}
        sent = [
            c.json.get("parent_message_id") for c in p.console.calls_to("POST", "/chat-messages")
        ]
        assert sent == [None, None, ids["first"], None]


@pytest.mark.parametrize("platform", ["dify", "chaindesk", "openai"])
async def test_replying_to_an_earlier_answer_where_the_platform_cannot_branch(
    hp: Harness, p: Platforms, platform: str
) -> None:
    await hp.start(agents_file(platform))
    first = await ask(hp, "first")
    await ask(hp, "second")

    await ask(hp, "third", reply_to_message_id=first.message_id)

    notice = f"{TITLES[platform]} can only continue from its latest answer"
    assert any(notice in t for t in hp.texts()), "the user is told, not misled"
    match platform:  # the latest conversation goes on, whole
        case "dify":
            sent = [c.json for c in p.dify.calls_to("POST", "/chat-messages")]
            assert sent[2]["conversation_id"] == sent[1]["conversation_id"] != ""
            assert "parent_message_id" not in sent[2]
        case "chaindesk":
            queries = p.chaindesk.queries
            assert queries[2].sent_conversation_id == queries[0].conversation_id
        case "openai":
            assert [m["content"] for m in p.openai.received[2]] == [
                "first",
                "Echo: first",
                "second",
                "Echo: second",
                "third",
            ]


DIFY_THINKING = [
    '<details style="color:gray;background-color: #f8f8f8;padding: 8px;border-radius: 4px;" '
    "open> <summary> Thinking... </summary>Let me think ste",
    "p by step.\n",
    "</details>The ",
    "answer.",
]


@pytest.mark.parametrize("platform", ["dify", "openai"])
async def test_reasoning_shows_collapsed_above_the_answer_and_is_not_part_of_it(
    hp: Harness, p: Platforms, platform: str
) -> None:
    if platform == "dify":
        p.dify.app.scripts["why?"] = dify.Script(chunks=DIFY_THINKING)
    else:
        p.openai.scripts["why?"] = openai.Completion(
            reasoning=["Let me think ", "step by step."], chunks=["The ", "answer."]
        )
    await hp.start(agents_file(platform))

    final = await ask(hp, "why?", expected="The answer.")

    thought = "💭 Let me think step by step."
    assert final.visible_text == f"{thought}\n\nThe answer."
    [quote] = entities(final, "expandable_blockquote")
    assert quote["offset"] == 0
    assert entity_text(final, quote) == thought
    if platform == "openai":
        await ask(hp, "and then?")
        assert p.openai.received[1][1] == {"role": "assistant", "content": "The answer."}
    else:
        assert next(iter(p.dify.messages.values())).answer.endswith("</details>The answer.")


# --- each platform's typical failures ------------------------------------------------------------


async def test_chaindesk_usage_limit_gives_a_clear_message(hp: Harness, p: Platforms) -> None:
    p.chaindesk.agent.query_limit = 0  # the organisation's plan is used up: 402 USAGE_LIMIT
    await hp.start(agents_file("chaindesk"))

    hp.say("hello")
    text = "⚠️ Chaindesk Docs's usage limit is reached. Please tell the bot's operator."
    final = await hp.until(lambda: settled(hp, text))

    assert final.visible_text == text
    assert final.reply_markup is None


async def test_olares_gateway_cut_keeps_the_text_and_the_conversation(
    hp: Harness, p: Platforms
) -> None:
    # 400 chunks 0.4 bot-seconds apart: far longer than the gateway's 30 s.
    p.answer_with("dify-console", [f"cut{i} " for i in range(400)], delay=0.02)
    await hp.start(agents_file("dify-console"))

    hp.say("a long story")
    note = "✂️ The answer was cut short by the connection to Olares Assistant."
    final = await hp.until(lambda: settled(hp, note), within=15)

    assert final.visible_text.startswith("cut0 cut1 cut2")
    assert final.visible_text.endswith(f"\n\n{note}")
    assert "cut399" not in final.visible_text
    assert buttons(final)[:2] == ["👍", "👎"], "the partial answer is the platform's message"

    p.console.app.default_script = dify.Script()  # echo again
    await ask(hp, "go on")
    first_conversation = next(iter(p.console.messages.values())).conversation_id
    sent = [c.json["conversation_id"] for c in p.console.calls_to("POST", "/chat-messages")]
    assert sent == ["", first_conversation], "the next message continues the conversation"


async def test_timeweb_rejected_token_gives_the_credentials_message(
    hp: Harness, p: Platforms
) -> None:
    p.timeweb.agent.token = "rotated-in-the-panel"  # the configured token no longer works
    await hp.start(agents_file("timeweb"))

    hp.say("hello")
    text = "⚠️ Timeweb Agent refused the bot's credentials. Please tell the bot's operator."
    final = await hp.until(lambda: settled(hp, text))

    assert final.visible_text == text
    assert all(ENVIRON["TIMEWEB_TOKEN"] not in t for t in chat_texts_sent(hp))


# --- switching the default -----------------------------------------------------------------------


async def test_switching_the_default_keeps_each_agents_conversation(
    hp: Harness, p: Platforms
) -> None:
    await hp.start(agents_file("dify"))
    await ask(hp, "one")
    dify_conversation = next(iter(p.dify.conversations))
    await hp.stop()

    await hp.start(agents_file("timeweb"))  # the operator changed the default; same Redis
    hp.say("/start")
    await hp.until(lambda: any("talk to Timeweb Agent" in t for t in hp.texts()))
    await ask(hp, "two")
    await ask(hp, "three")
    await hp.stop()

    await hp.start(agents_file("dify"))  # and back
    await ask(hp, "four")

    ids = {m.question: m.id for m in p.timeweb.messages.values()}
    assert p.timeweb.continued_from() == [None, ids["two"]], "a new Timeweb chain, then its own"
    sent = [c.json["conversation_id"] for c in p.dify.calls_to("POST", "/chat-messages")]
    assert sent == ["", dify_conversation], "Dify's conversation from the first run goes on"
    assert [p.dify.messages[m].query for m in p.dify.conversations[dify_conversation].messages] == [
        "one",
        "four",
    ]


async def test_stats_show_the_dify_console_platforms_own_statistics(hp: Harness) -> None:
    operator = 9001
    await hp.start(agents_file("dify-console"), operators=frozenset({operator}))
    await ask(hp, "count me")

    hp.say("/stats 24h", chat_id=operator)
    report: str = await hp.until(lambda: next((t for t in hp.texts(operator) if "📊" in t), None))
    lines = report.splitlines()
    console = next(i for i, line in enumerate(lines) if line.startswith("Olares Assistant"))
    assert "1 answers" in lines[console]
    assert lines[console + 1].startswith("  Dify:"), report
    assert "conversation count 1" in lines[console + 1]
    dify_line = next(line for line in lines if line.startswith(TITLES["dify"]))
    assert "0 answers" in dify_line
    assert [line for line in lines if line.startswith("  Dify:")] == [lines[console + 1]]
