"""Conformance suite for the Dify console adapter (Olares' "agent" app and plain /console/api).

Streams go through a real `httpx.AsyncClient` over `httpx.MockTransport`, replaying the console
traffic recorded from a live Dify 0.15.3 (transcripts 41-57) and the hand-written gateway
transcripts; `FakeDifyConsole` stands in where a test needs a server with state (conversations,
stop, feedback, a changed app configuration, the gateway).
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentClient,
    AgentNotFound,
    AgentRequest,
    AgentStreamCut,
    AgentTimeout,
    AgentUnavailable,
    AnswerRef,
    ConversationNotFound,
    Finished,
    Rating,
    Started,
    SupportsBranching,
    SupportsFeedback,
    SupportsStop,
    SupportsSuggestions,
)
from bot.agents.dify_console import STATISTICS, DifyConsoleClient
from bot.app import agent_http_client
from bot.config import DifyConsoleAgentConfig
from tests.agents.conformance import (
    USER,
    assert_redacted,
    check_contract,
    close_after_first_text,
    collect,
    connected,
    failure,
    logged_texts,
    only_failure,
    recorded,
    served,
    stop_after_three_texts,
)
from tests.fakes.dify import Script
from tests.fakes.dify_console import (
    DEFAULT_TOKEN,
    GATEWAY_BASE_PATH,
    FakeConsoleApp,
    FakeDifyConsole,
    default_model_config,
)
from tests.transcripts import (
    Answer,
    ChunkStream,
    Recorder,
    body,
    catalogue,
    json_response,
    live,
    sse_response,
    stream_response,
)

TOKEN = "console-SECRET-token-0001"
COOKIE = "authelia_session=SECRET-cookie-0002"
BASE_URL = "https://dify.example/console/api"
GATEWAY_URL = "https://agent.alice.olares.com/api/controllers/console/api"
APP_ID = "6af20025-7ce9-4768-aa17-ccf15dd7b6d0"  # the recorded app
SPLITS = [None, 1, 7, 64]
RECORDED_CONVERSATION = "02fbad4a-5df1-4919-99e3-2cf61f643777"
RECORDED_MESSAGE = "80872c9c-71d6-4744-be13-756c10f5ab9f"
ECHO = "Echo: hi from console. This is a deterministic reply from the fake LLM."


def make_config(**overrides: Any) -> DifyConsoleAgentConfig:
    values: dict[str, Any] = {
        "platform": "dify-console",
        "name": "olares",
        "title": "Olares",
        "base_url": BASE_URL,
        "app_id": APP_ID,
        "api_key": TOKEN,
    }
    values.update(overrides)
    return DifyConsoleAgentConfig.model_validate(values)


def console(
    *answers: Answer, **overrides: Any
) -> AbstractAsyncContextManager[tuple[DifyConsoleClient, Recorder]]:
    return recorded(DifyConsoleClient, make_config(**overrides), *answers)


def fake_client(
    fake: FakeDifyConsole, **overrides: Any
) -> AbstractAsyncContextManager[DifyConsoleClient]:
    values: dict[str, Any] = {"app_id": fake.console_app.app_id, "api_key": fake.token}
    if fake.gateway:
        values["base_url"] = GATEWAY_URL
    values.update(overrides)
    return connected(DifyConsoleClient, make_config(**values), fake.transport())


def app_detail(model_config: dict[str, Any] | None = None, mode: str = "chat") -> httpx.Response:
    """The recorded app detail (41), optionally with another model_config or mode."""
    detail = live("41").response.json()
    if model_config is not None:
        detail["model_config"] = model_config
    detail["mode"] = mode
    return json_response(200, detail)


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


# --- the client ----------------------------------------------------------------------------------


async def test_client_shape() -> None:
    async with console() as (client, _):
        assert isinstance(client, AgentClient)
        assert isinstance(client, SupportsStop)
        assert isinstance(client, SupportsFeedback)
        assert isinstance(client, SupportsSuggestions)
        assert isinstance(client, SupportsBranching)
        assert (client.name, client.title, client.platform) == ("olares", "Olares", "dify-console")
        assert client.feedback_clearable is True
        assert client.branching is True


# --- recorded console traffic --------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_41_42_chat_sends_the_app_config_verbatim(split: int | None) -> None:
    answers = (live("41").response.replay(), live("42").response.replay(split_every=split))
    async with console(*answers) as (client, recorder):
        events = await collect(client, AgentRequest("hi from console", USER))
    answer = check_contract(events)
    assert answer.text == ECHO
    assert isinstance(events[0], Started)
    assert events[0].task_id == "fb79046e-4a65-4388-8ee8-9558fcba3eaf"
    assert answer.conversation == RECORDED_CONVERSATION
    assert answer.message_id == RECORDED_MESSAGE
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.usage is not None
    assert finished.usage.total_tokens

    detail_request, chat_request = recorder.requests
    assert (detail_request.method, detail_request.url.path) == ("GET", live("41").request.path)
    assert (chat_request.method, chat_request.url.path) == ("POST", live("42").request.path)
    for request in recorder.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    recorded, ours = live("42").request.json(), sent_json(chat_request)
    # The recording omits conversation_id for a new conversation; "" means the same (C.2).
    assert set(ours) == set(recorded) | {"conversation_id"}
    assert ours["conversation_id"] == ""
    assert {k: ours[k] for k in recorded} == recorded
    assert ours["model_config"] == live("41").response.json()["model_config"]


async def test_console_chat_request_catalogue_shape() -> None:
    recorded = catalogue("dify-console-chat-request.json")
    answers = (app_detail(recorded["model_config"]), live("42").response.replay())
    async with console(*answers) as (client, recorder):
        await collect(client, AgentRequest(recorded["query"], USER))
    ours = sent_json(recorder.last)
    assert ours == recorded
    assert list(ours) == list(recorded)


async def test_49_50_stopped_stream_and_the_stop_call() -> None:
    answers = (
        live("41").response.replay(),
        live("49").response.replay(),
        live("50").response.replay(),
    )
    async with console(*answers) as (client, recorder):
        request = AgentRequest("console long please", USER, conversation=RECORDED_CONVERSATION)
        events = await collect(client, request)
        started = events[0]
        assert isinstance(started, Started)
        assert started.task_id is not None
        await client.stop(started.task_id, USER)
    answer = check_contract(events)
    assert answer.text == "".join(f"chunk{i:02d} " for i in range(12))
    assert answer.finished is not None  # a stop ends with an ordinary message_end (C.4)
    assert sent_json(recorder.requests[1]) == live("49").request.json()
    stop = recorder.last
    assert (stop.method, stop.url.path) == ("POST", live("50").request.path)
    assert stop.content == b""


async def test_45_suggestions() -> None:
    async with console(live("45").response.replay()) as (client, recorder):
        questions = await client.suggestions(AnswerRef(RECORDED_MESSAGE, USER))
    assert questions == ["What else can you do?", "Tell me more", "Give an example"]
    assert (recorder.last.method, recorder.last.url.path) == ("GET", live("45").request.path)


async def test_46_feedback_sends_message_id_and_rating() -> None:
    async with console(live("46").response.replay()) as (client, recorder):
        await client.feedback(AnswerRef(RECORDED_MESSAGE, USER), Rating.LIKE)
    assert recorder.last.url.path == live("46").request.path
    assert sent_json(recorder.last) == live("46").request.json()
    assert sent_json(recorder.last) == {"message_id": RECORDED_MESSAGE, "rating": "like"}


async def test_57_bad_token() -> None:
    async with console(live("57").response.replay(), api_key="not-a-token") as (client, _):
        with pytest.raises(AgentAuthError) as caught:
            await client.check()
    assert caught.value.detail == "Invalid token."
    async with console(live("57").response.replay()) as (client, recorder):
        events = await collect(client)
    assert type(only_failure(events)) is AgentAuthError
    assert len(recorder.requests) == 1  # no chat without the app's configuration


async def test_41_check_describes_the_app_and_caches_its_config() -> None:
    answers = (live("41").response.replay(), live("42").response.replay())
    async with console(*answers) as (client, recorder):
        assert await client.check() == "Dify console app 'Local chat app' (chat)"
        check_contract(await collect(client, AgentRequest("hi from console", USER)))
    assert [r.method for r in recorder.requests] == ["GET", "POST"]


# --- the Olares gateway --------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_gateway_cut_keeps_partial_text_and_conversation(split: int | None) -> None:
    data = body("dify-olares-gateway-truncated-stream.txt")
    answers = (app_detail(), sse_response(data, split_every=split))
    async with console(*answers, base_url=GATEWAY_URL, api_key=None) as (client, recorder):
        events = await collect(client)
    answer = check_contract(events)
    assert isinstance(events[0], Started)
    assert answer.text == "Here is a long essay about distributed"
    error = failure(events)
    assert type(error) is AgentStreamCut
    assert "30 s" in error.detail
    assert answer.conversation == "3f9a6c2e-1b7d-4e8a-9c5f-0a1b2c3d4e5f"
    assert "authorization" not in recorder.last.headers  # the gateway adds its own token
    assert recorder.last.url.path == f"/api/controllers/console/api/apps/{APP_ID}/chat-messages"


@pytest.mark.parametrize(
    ("cut", "text"),
    # Chunks at 0, 0.2 and 0.4 s: a cut at 0.3 s falls well between two of them.
    [({"gateway_cut_after": 0.3}, "one two "), ({"gateway_cut_after_chunks": 1}, "one ")],
)
async def test_fake_gateway_cuts_streams(cut: dict[str, Any], text: str) -> None:
    script = Script(chunks=["one ", "two ", "three"], delay=0.2)
    fake = FakeDifyConsole(FakeConsoleApp(default_script=script), token=None, gateway=True, **cut)
    async with fake_client(fake) as client:
        events = await asyncio.wait_for(collect(client), timeout=2)
        answer = check_contract(events)
        assert answer.text == text
        assert type(failure(events)) is AgentStreamCut
        # The conversation survives the cut: the next question continues it.
        assert answer.conversation is not None
        fake.gateway_cut_after = fake.gateway_cut_after_chunks = None
        again = AgentRequest("again", USER, conversation=answer.conversation)
        assert check_contract(await collect(client, again)).conversation == answer.conversation


async def test_gateway_cut_over_real_http() -> None:
    script = Script(chunks=["Привет", ", ", "мир", " 😀", "!"], delay=0.2)
    fake = FakeDifyConsole(FakeConsoleApp(default_script=script), token=None, gateway=True)
    fake.gateway_cut_after = 0.5  # between the chunks at 0.4 and 0.6 s
    async with served(fake) as url, agent_http_client() as http:
        base_url = url.removesuffix("/v1") + GATEWAY_BASE_PATH
        config = make_config(base_url=base_url, api_key=None, app_id=fake.console_app.app_id)
        events = await collect(DifyConsoleClient(config, http))
    answer = check_contract(events)
    assert answer.text == "Привет, мир"
    assert type(failure(events)) is AgentStreamCut
    assert answer.conversation in fake.conversations


async def test_gateway_app_not_created_through_it() -> None:
    app = FakeConsoleApp(registered=False)
    fake = FakeDifyConsole(app, token=None, gateway=True)
    async with fake_client(fake) as client:
        events = await collect(client)
        with pytest.raises(AgentNotFound) as caught:
            await client.check()
    error = failure(events)
    assert type(error) is AgentNotFound
    assert error.code == "app_not_found"
    assert "created through the gateway" in error.detail
    assert "created through the gateway" in caught.value.detail


async def test_gateway_text_500_is_unavailable() -> None:
    fake = FakeDifyConsole(token=None, gateway=True)
    fake.fail_next(500, "Failed to call app chat message API")
    async with fake_client(fake) as client:
        events = await collect(client)
        assert check_contract(await collect(client)).text == "Echo: hi"
    error = failure(events)
    assert type(error) is AgentUnavailable
    assert error.detail == "Failed to call app chat message API"


async def test_sso_redirect_is_an_auth_error_naming_only_the_host() -> None:
    fake = FakeDifyConsole(token=None, cookie=COOKIE, gateway=True)
    async with fake_client(fake) as client:
        events = await collect(client)
    error = failure(events)
    assert type(error) is AgentAuthError
    assert "auth.alice.olares.com" in error.detail
    assert "rd=" not in error.detail
    async with fake_client(fake, headers={"Cookie": COOKIE}) as client:
        assert check_contract(await collect(client)).text == "Echo: hi"
    assert fake.calls[-1].headers["cookie"] == "<present>"


@pytest.mark.parametrize(
    ("api_key", "message"),
    [("wrong-token", "Invalid token."), (None, "Invalid Authorization token.")],
)
async def test_console_token_required_when_direct(api_key: str | None, message: str) -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake, api_key=api_key) as client:
        error = failure(await collect(client))
    assert type(error) is AgentAuthError
    assert error.detail == message


# --- the app's configuration ---------------------------------------------------------------------


async def test_model_config_is_fetched_once_for_many_answers() -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake) as client:
        for text in ("one", "two", "three"):
            check_contract(await collect(client, AgentRequest(text, USER)))
    assert len(fake.calls_to("GET", f"/apps/{APP_ID}")) == 1
    chats = fake.calls_to("POST", "/chat-messages")
    assert len(chats) == 3
    assert all(c.json["model_config"] == fake.console_app.model_config for c in chats)


async def test_answers_started_together_share_one_fetch() -> None:
    async def slow_server(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            await asyncio.sleep(0.02)  # the others start while the detail is on its way
            return app_detail()
        return live("42").response.replay()

    async with console(slow_server) as (client, recorder):
        answers = await asyncio.gather(*(collect(client) for _ in range(3)))
    assert all(check_contract(a).text == ECHO for a in answers)
    assert [r.method for r in recorder.requests].count("GET") == 1


async def test_check_refreshes_the_cached_config() -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake) as client:
        check_contract(await collect(client))
        fake.console_app.model_config = default_model_config("other-model")
        await client.check()
        check_contract(await collect(client))
    assert len(fake.calls_to("GET", f"/apps/{APP_ID}")) == 2
    assert (
        fake.calls_to("POST", "/chat-messages")[-1].json["model_config"]["model"]
        == (fake.console_app.model_config["model"])
    )


async def test_a_config_made_stale_in_the_console_is_refetched_once() -> None:
    app = FakeConsoleApp(available_models=frozenset({"fake-gpt"}))
    fake = FakeDifyConsole(app)
    async with fake_client(fake) as client:
        check_contract(await collect(client))
        # The admin switches the app to another model; the old one is gone.
        app.model_config = default_model_config("new-model")
        app.available_models = frozenset({"new-model"})
        events = await collect(client)
    assert check_contract(events).text == "Echo: hi"
    assert [(c.method, c.path.rsplit("/", 1)[-1]) for c in fake.calls] == [
        ("GET", APP_ID),
        ("POST", "chat-messages"),
        ("POST", "chat-messages"),  # 400: model.name must be in the specified model list
        ("GET", APP_ID),
        ("POST", "chat-messages"),
    ]
    assert fake.calls[-1].json["model_config"]["model"]["name"] == "new-model"


async def test_an_invalid_config_that_did_not_change_is_reported() -> None:
    app = FakeConsoleApp(available_models=frozenset({"something-else"}))
    fake = FakeDifyConsole(app)
    async with fake_client(fake) as client:
        events = await collect(client)
    error = failure(events)
    assert type(error) is AgentBadRequest
    assert error.detail == "model.name must be in the specified model list"
    assert [c.method for c in fake.calls] == ["GET", "POST", "GET"]  # refetched, no retry


@pytest.mark.parametrize("mode", ["advanced-chat", "workflow", "completion"])
async def test_apps_that_cannot_chat_are_rejected_clearly(mode: str) -> None:
    fake = FakeDifyConsole(FakeConsoleApp(other_mode=mode))
    async with fake_client(fake) as client:
        events = await collect(client)
        with pytest.raises(AgentBadRequest) as caught:
            await client.check()
    error = only_failure(events)
    assert type(error) is AgentBadRequest
    for detail in (error.detail, caught.value.detail):
        assert repr(mode) in detail
        assert "only chat and agent-chat apps" in detail
    assert not fake.calls_to("POST", "/chat-messages")


async def test_difys_own_mode_refusal_is_a_bad_request() -> None:
    # The detail said chat, but the app was converted meanwhile: Dify's 404 app_not_found.
    fake = FakeDifyConsole(FakeConsoleApp())
    async with fake_client(fake) as client:
        check_contract(await collect(client))
        fake.console_app.other_mode = "advanced-chat"
        error = failure(await collect(client))
    assert type(error) is AgentBadRequest
    assert "not in the supported list" in error.detail


async def test_detail_without_model_config_is_a_protocol_error() -> None:
    detail = {"id": APP_ID, "name": "x", "mode": "chat", "model_config": None}
    async with console(json_response(200, detail)) as (client, _):
        error = failure(await collect(client))
    assert error.kind == "protocol"


# --- conversations and branching -----------------------------------------------------------------


async def test_conversation_is_carried_to_the_next_request() -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake) as client:
        first = check_contract(await collect(client, AgentRequest("hello there", USER)))
        assert first.conversation is not None
        request = AgentRequest("again", USER, conversation=first.conversation)
        second = check_contract(await collect(client, request))
        unknown = AgentRequest("hi", USER, conversation="00000000-0000-0000-0000-000000000000")
        gone = failure(await collect(client, unknown))
    assert second.conversation == first.conversation
    chats = fake.calls_to("POST", "/chat-messages")
    assert [c.json["conversation_id"] for c in chats[:2]] == ["", first.conversation]
    assert type(gone) is ConversationNotFound


async def test_parent_message_id_is_sent_only_when_given() -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake) as client:
        first = check_contract(await collect(client))
        assert first.message_id is not None
        request = AgentRequest(
            "branch", USER, conversation=first.conversation, parent_message_id=first.message_id
        )
        check_contract(await collect(client, request))
    chats = fake.calls_to("POST", "/chat-messages")
    assert "parent_message_id" not in chats[0].json
    assert chats[1].json["parent_message_id"] == first.message_id


async def test_agent_chat_app() -> None:
    fake = FakeDifyConsole(FakeConsoleApp(mode="agent-chat"))
    async with fake_client(fake) as client:
        answer = check_contract(await collect(client, AgentRequest("what now", USER)))
        assert answer.text == "Echo: what now"
        assert await client.check() == "Dify console app 'Fake console app' (agent-chat)"


async def test_configured_inputs_and_headers_are_sent() -> None:
    fake = FakeDifyConsole()
    overrides = {"inputs": {"topic": "bots"}, "headers": {"X-Extra": "1"}}
    async with fake_client(fake, **overrides) as client:
        check_contract(await collect(client))
    for call in fake.calls:
        assert call.headers["x-extra"] == "1"
        assert call.authorized
    assert fake.calls_to("POST", "/chat-messages")[0].json["inputs"] == {"topic": "bots"}


# --- stop, feedback, suggestions -----------------------------------------------------------------


async def test_stop_really_stops() -> None:
    chunks = [f"c{i:02d} " for i in range(20)]
    fake = FakeDifyConsole(FakeConsoleApp(default_script=Script(chunks=chunks, delay=0.005)))
    async with fake_client(fake) as client:
        # Any user stops it: the console account is shared.
        events = await stop_after_three_texts(
            client, AgentRequest("long please", USER), "tg-anyone"
        )
    answer = check_contract(events)
    assert answer.finished is not None
    assert answer.text == "".join(chunks[:4])  # three, plus the one Dify lets through
    assert fake.calls_to("POST", "/stop")[0].json is None


async def test_feedback_is_one_admin_rating_per_message() -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake) as client:
        answer = check_contract(await collect(client))
        assert answer.message_id is not None
        ref = AnswerRef(answer.message_id, USER, answer.conversation)
        await client.feedback(ref, None)  # nothing to clear: Dify's 400, treated as cleared
        assert fake.ratings()[answer.message_id] is None
        await client.feedback(ref, Rating.LIKE)
        await client.feedback(AnswerRef(answer.message_id, "tg-someone-else"), Rating.DISLIKE)
        assert fake.ratings()[answer.message_id] == "dislike"  # shared, last one wins
        await client.feedback(ref, None)
        assert fake.ratings()[answer.message_id] is None
        with pytest.raises(AgentNotFound):
            await client.feedback(AnswerRef("00000000-0000-0000-0000-000000000000", USER), None)
    bodies = [c.json for c in fake.calls_to("POST", "/feedbacks")]
    assert bodies[0] == {"message_id": answer.message_id, "rating": None}


async def test_other_feedback_400s_are_not_swallowed() -> None:
    answer = json_response(400, {"code": "invalid_param", "message": "rating is invalid"})
    async with console(answer) as (client, _):
        with pytest.raises(AgentBadRequest):
            await client.feedback(AnswerRef(RECORDED_MESSAGE, USER), None)


async def test_suggestions_from_the_fake_and_when_disabled() -> None:
    fake = FakeDifyConsole()
    async with fake_client(fake) as client:
        answer = check_contract(await collect(client))
        assert answer.message_id is not None
        ref = AnswerRef(answer.message_id, USER)
        assert await client.suggestions(ref) == list(fake.console_app.suggested or [])
        fake.console_app.suggested = None  # 403 app_suggested_questions_after_answer_disabled
        assert await client.suggestions(ref) == []
        with pytest.raises(AgentNotFound):
            await client.suggestions(AnswerRef("00000000-0000-0000-0000-000000000000", USER))


async def test_suggestions_disabled_service_style_400_is_empty() -> None:
    disabled = json_response(
        400, {"code": "bad_request", "message": "Suggested Questions Is Disabled."}
    )
    async with console(disabled) as (client, _):
        assert await client.suggestions(AnswerRef(RECORDED_MESSAGE, USER)) == []


async def test_suggestions_off_in_config_sends_nothing() -> None:
    async with console(suggestions=False) as (client, recorder):
        assert await client.suggestions(AnswerRef(RECORDED_MESSAGE, USER)) == []
    assert recorder.requests == []


# --- statistics ----------------------------------------------------------------------------------


def _today_window() -> tuple[datetime, datetime]:
    today = datetime.combine(date.today(), datetime.min.time())
    return today - timedelta(days=7), today + timedelta(hours=23, minutes=59)


async def test_statistics_from_every_endpoint() -> None:
    fake = FakeDifyConsole()
    start, end = _today_window()
    async with fake_client(fake) as client:
        check_contract(await collect(client))
        stats = await client.statistics(start, end)
    assert list(stats) == list(STATISTICS)
    assert stats["daily-conversations"] == [
        {"date": date.today().isoformat(), "conversation_count": 1}
    ]
    assert stats["token-costs"][0]["currency"] == "USD"
    assert stats["tokens-per-second"][0]["tps"] == 25.0
    calls = [c for c in fake.calls if "/statistics/" in c.path]
    assert {c.path.rsplit("/", 1)[-1] for c in calls} == set(STATISTICS)
    assert all(
        c.query == {"start": f"{start:%Y-%m-%d} 00:00", "end": f"{end:%Y-%m-%d} 23:59"}
        for c in calls
    )


async def test_statistics_leave_out_failing_endpoints(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relaygram.agents.dify_console")
    broken = frozenset({"token-costs", "tokens-per-second"})
    fake = FakeDifyConsole(FakeConsoleApp(broken_statistics=broken))
    async with fake_client(fake) as client:
        stats = await client.statistics(*_today_window())
    assert set(stats) == set(STATISTICS) - broken
    assert all(rows == [] for rows in stats.values())  # no messages yet
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "token-costs" in logged
    assert "tokens-per-second" in logged


async def test_statistics_parse_recorded_shapes_and_skip_junk_rows() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        if name == "daily-end-users":
            return json_response(200, {"unexpected": True})
        return json_response(200, {"data": [{"date": "2026-11-22", "value": name}, "junk", 3]})

    async with console(answer) as (client, _):
        stats = await client.statistics(datetime(2026, 11, 1), datetime(2026, 11, 22, 23, 59))
    assert "daily-end-users" not in stats
    assert stats["daily-conversations"] == [{"date": "2026-11-22", "value": "daily-conversations"}]


async def test_statistics_raise_when_nothing_answers() -> None:
    def unauthorized(_: httpx.Request) -> httpx.Response:
        return live("57").response.replay()

    async with console(unauthorized, api_key="not-a-token") as (client, _):
        with pytest.raises(AgentAuthError):
            await client.statistics(*_today_window())


# --- transport failures --------------------------------------------------------------------------


async def test_silence_timeout_between_chunks() -> None:
    chunks = live("42").response.chunks
    stream = ChunkStream(chunks, delays=[0, 0, 5.0] + [0] * len(chunks))
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with console(app_detail(), response, silence_timeout=0.05) as (client, _):
        events = await asyncio.wait_for(collect(client), timeout=2)
    answer = check_contract(events)
    assert answer.text == "Echo: hi "
    assert type(failure(events)) is AgentTimeout
    assert answer.conversation == RECORDED_CONVERSATION
    assert stream.closed


async def test_silence_timeout_on_the_app_detail() -> None:
    async with console(httpx.ReadTimeout("timed out")) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is AgentTimeout


async def test_closing_the_stream_early_closes_the_response() -> None:
    stream = ChunkStream(live("42").response.chunks)
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with console(app_detail(), response) as (client, _):
        await close_after_first_text(client)
    assert stream.closed
    assert stream.sent < len(stream.chunks)


# --- secrets -------------------------------------------------------------------------------------


def _echo_credentials(request: httpx.Request) -> httpx.Response:
    """A hostile gateway that quotes the credentials back in its error message."""
    quoted = f"{request.headers.get('authorization')} / {request.headers.get('cookie')}"
    return json_response(401, {"code": "unauthorized", "message": f"Bad login {quoted}"})


def _stream_quoting_secrets(request: httpx.Request) -> httpx.Response:
    message = f"upstream said: token={TOKEN} cookie={COOKIE}"
    event = {"event": "error", "code": "completion_request_error", "message": message}
    return stream_response([f"data: {json.dumps(event)}\n\n".encode()])


def _garbage_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return stream_response([f"data: {{oops {TOKEN} {COOKIE}\n\n".encode()])


DETAIL = "the recorded app detail"


@pytest.mark.parametrize(
    "answers",
    [
        [_echo_credentials],
        [DETAIL, _echo_credentials],
        [DETAIL, _stream_quoting_secrets],
        [DETAIL, _garbage_quoting_secrets],
        [httpx.ConnectError(f"cannot reach, token {TOKEN} {COOKIE}")],
    ],
    ids=["echoed-on-detail", "echoed-on-chat", "error-event", "garbage", "connect-error"],
)
async def test_secrets_never_reach_errors_or_logs(
    answers: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prepared = [app_detail() if a == DETAIL else a for a in answers]
    async with console(*prepared, headers={"Cookie": COOKIE}) as (client, recorder):
        events = await collect(client)
    sent = recorder.last.headers
    assert sent["authorization"] == f"Bearer {TOKEN}"  # they were really sent
    assert sent["cookie"] == COOKIE
    assert_redacted(logged_texts(failure(events), caplog.records), TOKEN, COOKIE)


async def test_secrets_never_reach_errors_of_other_calls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with console(_echo_credentials, headers={"Cookie": COOKIE}) as (client, _):
        for call in (
            client.check(),
            client.stop("task", USER),
            client.feedback(AnswerRef(RECORDED_MESSAGE, USER), Rating.LIKE),
            client.suggestions(AnswerRef(RECORDED_MESSAGE, USER)),
            client.statistics(*_today_window()),
        ):
            with pytest.raises(AgentAuthError) as caught:
                await call
            texts = logged_texts(caught.value, caplog.records)
            assert all(TOKEN not in t and COOKIE not in t for t in texts)


async def test_fake_records_hide_credentials() -> None:
    fake = FakeDifyConsole(token=DEFAULT_TOKEN, cookie=COOKIE)
    async with fake_client(fake, headers={"Cookie": COOKIE}) as client:
        check_contract(await collect(client))
    for call in fake.calls:
        assert call.headers["authorization"] == "<present>"
        assert call.headers["cookie"] == "<present>"
