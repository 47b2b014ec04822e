"""Conformance suite for the Timeweb Cloud AI native-API adapter (SPEC.md §A.1-A.2).

Every request goes through a real `httpx.AsyncClient` over `httpx.MockTransport`: the
transcripts (`timeweb-call-request.json` / `timeweb-call-response.json`) replayed exactly, the
answers and errors SPEC.md describes where no transcript exists, and FakeTimeweb where the test
needs a server that keeps the history (continuing, branching).
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentClient,
    AgentError,
    AgentNotFound,
    AgentProtocolError,
    AgentQuotaExceeded,
    AgentRateLimited,
    AgentRequest,
    AgentTimeout,
    AgentUnavailable,
    AgentUpstreamError,
    ConversationNotFound,
    Failed,
    Finished,
    FinishReason,
    KeepsNoHistory,
    Started,
    SupportsBranching,
    SupportsFeedback,
    SupportsStop,
    SupportsSuggestions,
    TextDelta,
)
from bot.agents.registry import build_client
from bot.agents.timeweb import TimewebClient, parse_answer, read_finish_reason
from bot.app import agent_http_client
from bot.config import TimewebAgentConfig
from tests.agents.conformance import (
    USER,
    assert_redacted,
    check_contract,
    collect,
    connected,
    failure,
    only_failure,
    recorded,
)
from tests.fakes.timeweb import OMIT, FakeAgent, FakeTimeweb, Script
from tests.transcripts import Answer, ChunkStream, Recorder, catalogue, json_response, resplit

TOKEN = "tw-SECRET-token-0001"
HEADER_SECRET = "hdr-SECRET-value-0002"
ACCESS_ID = "5b1f6c8e-2d4a-4e0b-9c7d-1a2b3c4d5e6f"
BASE_URL = "https://agent.timeweb.cloud"
AGENT_PATH = f"/api/v1/cloud-ai/agents/{ACCESS_ID}"

RECORDED_REQUEST = catalogue("timeweb-call-request.json")
RECORDED_ANSWER = catalogue("timeweb-call-response.json")
ANSWER_ID = RECORDED_ANSWER["id"]


def make_config(**overrides: Any) -> TimewebAgentConfig:
    values: dict[str, Any] = {
        "platform": "timeweb",
        "name": "tw",
        "title": "Timeweb",
        "base_url": BASE_URL,
        "agent_id": ACCESS_ID,
        "token": TOKEN,
    }
    values.update(overrides)
    return TimewebAgentConfig.model_validate({k: v for k, v in values.items() if v is not None})


def timeweb(
    *answers: Answer, **overrides: Any
) -> AbstractAsyncContextManager[tuple[TimewebClient, Recorder]]:
    return recorded(TimewebClient, make_config(**overrides), *answers)


def answer_with(**fields: Any) -> httpx.Response:
    """The recorded answer with some fields changed (a value of OMIT removes the field)."""
    payload = {**RECORDED_ANSWER, **fields}
    return json_response(200, {k: v for k, v in payload.items() if v is not OMIT})


def recorded_answer(split: int | None = None) -> httpx.Response:
    data = json.dumps(RECORDED_ANSWER, ensure_ascii=False).encode()
    headers = [("Content-Type", "application/json; charset=utf-8")]
    return httpx.Response(200, headers=headers, stream=ChunkStream(resplit([data], split)))


# --- the client and its capabilities -------------------------------------------------------------


async def test_client_shape() -> None:
    async with timeweb() as (client, _):
        assert isinstance(client, AgentClient)
        assert isinstance(client, SupportsBranching)
        assert client.branching is True
        assert (client.name, client.title, client.platform) == ("tw", "Timeweb", "timeweb")
        # No stop, feedback or suggestions endpoint exists: the capabilities are absent.
        for capability in (SupportsStop, SupportsFeedback, SupportsSuggestions, KeepsNoHistory):
            assert not isinstance(client, capability)
        for method in ("stop", "feedback", "suggestions"):
            assert not hasattr(client, method)


async def test_registered_in_the_registry() -> None:
    async with agent_http_client() as http:
        assert isinstance(build_client(make_config(), http), TimewebClient)


# --- the recorded exchange -----------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1, 3, 7])
async def test_recorded_call(split: int | None) -> None:
    request = AgentRequest(
        RECORDED_REQUEST["message"], USER, conversation=RECORDED_REQUEST["parent_message_id"]
    )
    async with timeweb(recorded_answer(split)) as (client, recorder):
        events = await collect(client, request)

    assert events == [
        Started(message_id=ANSWER_ID, conversation=ANSWER_ID),
        TextDelta("Тариф Pro стоит 990 ₽ в месяц."),
        Finished(message_id=ANSWER_ID, conversation=ANSWER_ID, finish_reason=FinishReason.STOP),
    ]
    check_contract(events)
    sent = recorder.last
    assert (sent.method, sent.url) == ("POST", httpx.URL(f"{BASE_URL}{AGENT_PATH}/call"))
    assert recorder.json() == RECORDED_REQUEST
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["x-proxy-source"] == "relaygram"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"


async def test_new_chat_omits_parent_message_id() -> None:
    async with timeweb(answer_with()) as (client, recorder):
        await collect(client, AgentRequest("Привет!", USER))
    assert recorder.json() == {"message": "Привет!"}


async def test_parent_message_id_wins_over_the_conversation() -> None:
    request = AgentRequest("x", USER, conversation="latest-answer", parent_message_id="older-one")
    async with timeweb(answer_with()) as (client, recorder):
        await collect(client, request)
    assert recorder.json() == {"message": "x", "parent_message_id": "older-one"}


async def test_answer_id_is_the_next_parent_message_id() -> None:
    second_id = "0d5e7f10-1111-4222-8333-444455556666"
    async with timeweb(answer_with(), answer_with(id=second_id)) as (client, recorder):
        first = check_contract(await collect(client, AgentRequest("one", USER)))
        # response_id is a trace id, never the conversation ref (SPEC A.2 ⚠️).
        assert first.conversation == ANSWER_ID != RECORDED_ANSWER["response_id"]
        second = check_contract(
            await collect(client, AgentRequest("two", USER, conversation=first.conversation))
        )
    assert recorder.json(0) == {"message": "one"}
    assert recorder.json(1) == {"message": "two", "parent_message_id": ANSWER_ID}
    assert (second.message_id, second.conversation) == (second_id, second_id)


async def test_public_agent_sends_no_authorization() -> None:
    async with timeweb(answer_with(), answer_with(), token=None) as (client, recorder):
        await collect(client)
    assert "authorization" not in recorder.last.headers
    assert recorder.last.headers["x-proxy-source"] == "relaygram"


async def test_empty_token_sends_no_authorization() -> None:
    async with timeweb(answer_with(), token="") as (client, recorder):
        await collect(client)
    assert "authorization" not in recorder.last.headers


async def test_proxy_source_and_extra_headers_from_config() -> None:
    headers = {"X-Extra": "1", "x-proxy-source": "override"}
    async with timeweb(answer_with(), proxy_source="tg-bot", headers=headers) as (client, rec):
        await collect(client)
    assert rec.last.headers["x-proxy-source"] == "override"  # configured headers apply last
    assert rec.last.headers["x-extra"] == "1"
    async with timeweb(answer_with(), proxy_source="tg-bot") as (client, rec):
        await collect(client)
    assert rec.last.headers["x-proxy-source"] == "tg-bot"
    async with timeweb(answer_with(), proxy_source="") as (client, rec):
        await collect(client)
    assert "x-proxy-source" not in rec.last.headers


async def test_base_url_with_trailing_slash_and_odd_access_id() -> None:
    async with timeweb(answer_with(), base_url=f"{BASE_URL}/", agent_id="a/b c") as (client, rec):
        await collect(client)
    assert rec.last.url.raw_path == b"/api/v1/cloud-ai/agents/a%2Fb%20c/call"


# --- finish reasons ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("lenght", FinishReason.LENGTH),  # the doc's spelling
        ("LENGHT", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
        (None, FinishReason.STOP),
        (OMIT, FinishReason.STOP),  # the types-of-api sample has no finish_reason
        ({"type": "length"}, FinishReason.LENGTH),
        ({"reason": "content_filter"}, FinishReason.CONTENT_FILTER),
        ({"type": 5, "reason": "lenght"}, FinishReason.LENGTH),
        ({"unexpected": "shape"}, FinishReason.STOP),
        ({}, FinishReason.STOP),
        ([1, 2], FinishReason.STOP),
        (7, FinishReason.STOP),
        ("something_new", FinishReason.STOP),
    ],
)
async def test_finish_reasons(value: object, expected: FinishReason) -> None:
    async with timeweb(answer_with(finish_reason=value)) as (client, _):
        events = await collect(client)
    answer = check_contract(events)
    assert answer.finished is not None
    assert answer.finished.finish_reason is expected
    assert answer.text == RECORDED_ANSWER["message"]


@pytest.mark.parametrize("value", ["error", {"type": "error"}])
async def test_finish_reason_error_fails_but_keeps_the_text(value: object) -> None:
    async with timeweb(answer_with(finish_reason=value)) as (client, _):
        events = await collect(client)
    answer = check_contract(events)
    assert answer.text == RECORDED_ANSWER["message"]
    assert answer.message_id == ANSWER_ID
    # The failed exchange is not continued from: the stored ref stays at the last good answer.
    assert answer.conversation is None
    error = failure(events)
    assert type(error) is AgentUpstreamError
    # The doc says to quote the response in a support ticket: the ids are in the detail.
    assert RECORDED_ANSWER["response_id"] in error.detail


async def test_finish_reason_error_without_text() -> None:
    async with timeweb(answer_with(message="", finish_reason="error")) as (client, _):
        events = await collect(client)
    assert [type(e) for e in events] == [Started, Failed]


def test_read_finish_reason() -> None:
    assert read_finish_reason(" Stop ") == "stop"
    assert read_finish_reason("") is None
    assert read_finish_reason({"type": "lenght"}) == "lenght"


# --- answers this adapter must read defensively --------------------------------------------------


async def test_empty_message_gives_no_text_delta() -> None:
    async with timeweb(answer_with(message="")) as (client, _):
        events = await collect(client)
    assert [type(e) for e in events] == [Started, Finished]


async def test_null_message_is_empty() -> None:
    async with timeweb(answer_with(message=None)) as (client, _):
        assert check_contract(await collect(client)).text == ""


async def test_answer_without_id_still_delivers_the_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relaygram.agents.timeweb")
    async with timeweb(answer_with(id=OMIT)) as (client, _):
        events = await collect(client)
    answer = check_contract(events)
    assert answer.text == RECORDED_ANSWER["message"]
    assert answer.conversation is None  # the bot keeps continuing from the previous answer
    assert any("without an id" in r.getMessage() for r in caplog.records)


async def test_unicode_and_newlines_are_exact() -> None:
    text = "Привет, мир! 你好 😀👍🏽\n\n- пункт\n- naïve café"
    async with timeweb(answer_with(message=text)) as (client, _):
        assert check_contract(await collect(client)).text == text


async def test_undocumented_usage_is_taken_when_present() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    async with timeweb(answer_with(usage=usage)) as (client, _):
        answer = check_contract(await collect(client))
    assert answer.usage is not None
    assert answer.usage.total_tokens == 7


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json=["a list"]),
        httpx.Response(200, json={}),
        httpx.Response(200, json={"message": 5, "id": "x"}),
        httpx.Response(200, json={"status": "ok"}),
    ],
    ids=["html", "list", "empty-object", "message-not-text", "other-object"],
)
async def test_unreadable_answers_are_protocol_errors(response: httpx.Response) -> None:
    async with timeweb(response) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is AgentProtocolError


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"status_code": 500, "error_code": "internal", "message": "boom"}, AgentUnavailable),
        ({"status_code": 402, "error_code": "no_tokens", "message": "x"}, AgentQuotaExceeded),
        ({"error": "Something failed"}, AgentUnavailable),
        ({"error_code": "x", "message": "y", "status_code": "weird"}, AgentUnavailable),
    ],
)
async def test_error_object_in_a_200_is_an_error_not_an_answer(
    payload: dict[str, Any], expected: type[AgentError]
) -> None:
    async with timeweb(json_response(200, payload)) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is expected


async def test_an_answer_mentioning_error_fields_is_still_an_answer() -> None:
    async with timeweb(answer_with(error=None, status_code=200)) as (client, _):
        assert check_contract(await collect(client)).text == RECORDED_ANSWER["message"]


def test_parse_answer() -> None:
    answer = parse_answer(json.dumps(RECORDED_ANSWER))
    assert (answer.id, answer.response_id, answer.finish_reason) == (
        ANSWER_ID,
        RECORDED_ANSWER["response_id"],
        "stop",
    )
    assert parse_answer('{"id": 42, "message": "x"}').id == "42"


# --- HTTP errors (SPEC A.2: status codes; the body shape is unknown) -----------------------------

HTTP_ERRORS: list[tuple[int, Any, type[AgentError]]] = [
    (401, {"message": "Unauthorized"}, AgentAuthError),
    (403, {"message": "Forbidden"}, AgentAuthError),
    (404, {"message": "Agent not found"}, AgentNotFound),
    (
        404,
        {"status_code": 404, "error_code": "not_found", "message": "Agent not found"},
        AgentNotFound,
    ),
    (402, {"error": "Payment Required"}, AgentQuotaExceeded),
    (403, {"message": "Token quota exceeded for this agent"}, AgentQuotaExceeded),
    (429, {"detail": "Too Many Requests"}, AgentRateLimited),
    (400, {"detail": [{"msg": "field required"}]}, AgentBadRequest),
    (422, {"message": ["message must be a string"]}, AgentBadRequest),
    (500, {"message": "Internal server error"}, AgentUnavailable),
    (502, "<html>Bad Gateway</html>", AgentUnavailable),
    (503, "", AgentUnavailable),
    (504, {"error": {"message": "upstream timed out", "code": "timeout"}}, AgentUnavailable),
]


@pytest.mark.parametrize(("status", "body", "expected"), HTTP_ERRORS)
async def test_http_errors(status: int, body: Any, expected: type[AgentError]) -> None:
    response = (
        httpx.Response(status, text=body) if isinstance(body, str) else json_response(status, body)
    )
    async with timeweb(response) as (client, _):
        events = await collect(client)
    error = only_failure(events)
    assert type(error) is expected
    assert error.status == status


async def test_error_detail_reads_message_error_or_detail() -> None:
    cases = [
        ({"message": "Agent not found"}, "Agent not found"),
        ({"error": "Payment Required"}, "Payment Required"),
        ({"detail": "Nope"}, "Nope"),
        ({"error": {"message": "Inner", "type": "x"}}, "Inner"),
        ({"detail": [{"msg": "a"}, {"msg": "b"}]}, "a; b"),
    ]
    for body, expected in cases:
        async with timeweb(json_response(400, body)) as (client, _):
            assert failure(await collect(client)).detail == expected


async def test_404_says_bad_access_id() -> None:
    async with timeweb(json_response(404, {"message": "Agent not found"})) as (client, _):
        error = failure(await collect(client))
    assert "bad access id" in error.detail
    assert "Agent not found" in error.detail


async def test_429_retry_after() -> None:
    response = json_response(429, {"message": "slow down"}, [("Retry-After", "12")])
    async with timeweb(response) as (client, _):
        error = failure(await collect(client))
    assert isinstance(error, AgentRateLimited)
    assert error.retry_after == 12.0


@pytest.mark.parametrize("message", [None, "I am a teapot"])
async def test_raw_error_body_is_logged_redacted(
    message: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relaygram.agents.timeweb")
    body: dict[str, Any] = {"strange": "shape", "echo": f"Bearer {TOKEN}", "n": 1}
    if message:
        body["message"] = message
    async with timeweb(json_response(418, body)) as (client, _):
        error = failure(await collect(client))
    assert type(error) is AgentBadRequest
    assert error.detail == (message or '{"strange":"shape","echo":"Bearer ***","n":1}')
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert logged.count('"strange":"shape"') == 1
    assert '"strange":"shape"' in logged
    assert "Bearer ***" in logged
    assert TOKEN not in logged


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"message": "Parent message not found"}),
        (400, {"message": "parent_message_id must be a UUID"}),
        (422, {"detail": [{"msg": "parent_message_id: invalid uuid"}]}),
    ],
)
async def test_unknown_parent_restarts_the_conversation(status: int, body: Any) -> None:
    async with timeweb(json_response(status, body), json_response(status, body)) as (client, _):
        continued = failure(await collect(client, AgentRequest("x", USER, conversation="gone")))
        fresh = failure(await collect(client, AgentRequest("x", USER)))
    assert type(continued) is ConversationNotFound
    # Without a parent nothing was continued: the same words are not a conversation problem.
    assert type(fresh) is not ConversationNotFound


# --- transport -----------------------------------------------------------------------------------


async def test_silence_timeout_while_the_agent_generates() -> None:
    data = json.dumps(RECORDED_ANSWER).encode()
    stream = ChunkStream([data[:10], data[10:]], delays=[0, 5.0])
    response = httpx.Response(200, headers={"content-type": "application/json"}, stream=stream)
    async with timeweb(response, silence_timeout=0.05) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is AgentTimeout
    assert stream.closed


async def test_fake_delay_is_bounded_by_the_silence_timeout() -> None:
    fake = FakeTimeweb(FakeAgent(default_script=Script(delay=5.0)))
    async with fake_client(fake, silence_timeout=0.05) as client:
        events = await collect(client)
    assert type(failure(events)) is AgentTimeout


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), AgentUnavailable),
        (httpx.ConnectTimeout("slow"), AgentUnavailable),
        (httpx.ReadTimeout("silent"), AgentTimeout),
    ],
)
async def test_transport_failures(exc: Exception, expected: type[AgentError]) -> None:
    async with timeweb(exc) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is expected


# --- check ---------------------------------------------------------------------------------------


async def test_check_uses_the_models_list() -> None:
    models = {"object": "list", "data": [{"id": "deepseek-v3.2"}]}
    async with timeweb(json_response(200, models)) as (client, recorder):
        assert await client.check() == f"Timeweb agent {ACCESS_ID}"
    sent = recorder.last
    assert (sent.method, sent.url.path) == ("GET", f"{AGENT_PATH}/v1/models")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["x-proxy-source"] == "relaygram"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (json_response(404, {"message": "Agent not found"}), AgentNotFound),
        (json_response(401, {"message": "Unauthorized"}), AgentAuthError),
        (httpx.Response(503, text="down"), AgentUnavailable),
        (httpx.ConnectError("refused"), AgentUnavailable),
    ],
)
async def test_check_failures(answer: Answer, expected: type[AgentError]) -> None:
    async with timeweb(answer) as (client, _):
        with pytest.raises(expected):
            await client.check()


# --- secrets -------------------------------------------------------------------------------------


def _echo_auth(request: httpx.Request) -> httpx.Response:
    """A hostile gateway that quotes the credentials back in its error message."""
    quoted = f"{request.headers['authorization']} / {request.headers['x-gateway-token']}"
    return json_response(401, {"message": f"Bad token {quoted}"})


def _garbage_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text=f"oops {TOKEN} {HEADER_SECRET}")


@pytest.mark.parametrize(
    "answer",
    [
        _echo_auth,
        _garbage_quoting_secrets,
        httpx.ConnectError(f"cannot reach, key {TOKEN} {HEADER_SECRET}"),
    ],
    ids=["echoed-auth", "garbage", "connect-error"],
)
async def test_secrets_never_reach_errors_or_logs(
    answer: Answer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with timeweb(answer, headers={"X-Gateway-Token": HEADER_SECRET}) as (client, recorder):
        events = await collect(client)
    assert recorder.last.headers["authorization"] == f"Bearer {TOKEN}"  # really sent
    error = failure(events)
    texts = [str(error), error.detail, repr(error)]
    texts += [r.getMessage() for r in caplog.records]
    assert_redacted(texts, TOKEN, HEADER_SECRET)


async def test_secrets_never_reach_check_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with timeweb(_echo_auth, headers={"X-Gateway-Token": HEADER_SECRET}) as (client, _):
        with pytest.raises(AgentAuthError) as caught:
            await client.check()
    texts = [str(caught.value), *(r.getMessage() for r in caplog.records)]
    assert all(TOKEN not in t and HEADER_SECRET not in t for t in texts)
    assert "***" in str(caught.value)


# --- against FakeTimeweb -------------------------------------------------------------------------


def fake_client(fake: FakeTimeweb, **overrides: Any) -> AbstractAsyncContextManager[TimewebClient]:
    overrides.setdefault("agent_id", fake.agent.access_id)
    overrides.setdefault("token", fake.agent.token)
    return connected(TimewebClient, make_config(**overrides), fake.transport())


async def test_fake_keeps_the_history_server_side() -> None:
    fake = FakeTimeweb()
    async with fake_client(fake) as client:
        first = check_contract(await collect(client, AgentRequest("one", USER)))
        second = check_contract(
            await collect(client, AgentRequest("two", USER, conversation=first.conversation))
        )
        assert second.conversation is not None
        third = check_contract(
            await collect(client, AgentRequest("three", USER, conversation=second.conversation))
        )
    assert (first.text, second.text, third.text) == ("Echo: one", "Echo: two", "Echo: three")
    assert fake.continued_from() == [None, first.message_id, second.message_id]
    assert third.message_id is not None
    assert [m.question for m in fake.thread(third.message_id)] == ["one", "two", "three"]
    # Every answer has its own id and a different response_id.
    ids = {m.id for m in fake.messages.values()} | {m.response_id for m in fake.messages.values()}
    assert len(ids) == 6


async def test_fake_branching_from_an_earlier_answer() -> None:
    fake = FakeTimeweb()
    async with fake_client(fake) as client:
        first = check_contract(await collect(client, AgentRequest("one", USER)))
        second = check_contract(
            await collect(client, AgentRequest("two", USER, conversation=first.conversation))
        )
        branch = check_contract(
            await collect(
                client,
                AgentRequest(
                    "two again",
                    USER,
                    conversation=second.conversation,
                    parent_message_id=first.message_id,
                ),
            )
        )
    assert branch.message_id is not None
    assert [m.question for m in fake.thread(branch.message_id)] == ["one", "two again"]


async def test_fake_private_agent_and_unknown_agent() -> None:
    fake = FakeTimeweb(FakeAgent(token="private-token"))
    async with fake_client(fake) as client:
        assert check_contract(await collect(client)).text == "Echo: hi"
    async with fake_client(fake, token="wrong") as client:
        assert type(failure(await collect(client))) is AgentAuthError
    async with fake_client(fake, token=None) as client:
        assert type(failure(await collect(client))) is AgentAuthError
    async with fake_client(fake, agent_id="numeric-123") as client:
        assert type(failure(await collect(client))) is AgentNotFound
        with pytest.raises(AgentNotFound):
            await client.check()
    assert fake.calls[0].headers["authorization"] == "<present>"


async def test_fake_scripts_and_finish_reasons() -> None:
    agent = FakeAgent(
        scripts={
            "long": Script(message="cut sh", finish_reason="lenght"),
            "bare": Script(message="ok", finish_reason=OMIT),
            "boom": Script(message="", finish_reason="error"),
            "paid": Script(http_status=402, http_body={"message": "No tokens left"}),
        }
    )
    fake = FakeTimeweb(agent)
    async with fake_client(fake) as client:
        long = check_contract(await collect(client, AgentRequest("long", USER)))
        bare = check_contract(await collect(client, AgentRequest("bare", USER)))
        boom = await collect(client, AgentRequest("boom", USER))
        paid = await collect(client, AgentRequest("paid", USER))
        assert await client.check() == f"Timeweb agent {agent.access_id}"
    assert long.finished is not None
    assert long.finished.finish_reason is FinishReason.LENGTH
    assert bare.finished is not None
    assert bare.finished.finish_reason is FinishReason.STOP
    assert type(failure(boom)) is AgentUpstreamError
    assert type(failure(paid)) is AgentQuotaExceeded


async def test_fake_unknown_parent_and_fail_next() -> None:
    fake = FakeTimeweb()
    async with fake_client(fake) as client:
        stale = await collect(client, AgentRequest("x", USER, conversation="not-a-known-id"))
        assert type(failure(stale)) is ConversationNotFound
        fake.fail_next(503, "Service Unavailable")
        assert type(failure(await collect(client))) is AgentUnavailable
        assert check_contract(await collect(client)).text == "Echo: hi"
    lenient = FakeTimeweb(unknown_parent="new_chat")
    async with fake_client(lenient) as client:
        fresh = check_contract(await collect(client, AgentRequest("x", USER, conversation="?")))
    assert fresh.message_id is not None
    assert lenient.messages[fresh.message_id].parent_message_id is None


async def test_fake_requires_proxy_source_when_asked() -> None:
    fake = FakeTimeweb(require_proxy_source=True)
    async with fake_client(fake, proxy_source="") as client:
        assert type(failure(await collect(client))) is AgentBadRequest
    async with fake_client(fake) as client:
        assert check_contract(await collect(client)).text == "Echo: hi"
