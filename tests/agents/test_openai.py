"""Conformance suite for the OpenAI-compatible Chat Completions adapter (SPEC.md §A.3).

Every stream goes through a real `httpx.AsyncClient` over `httpx.MockTransport`: the Timeweb
transcripts (`timeweb-openai-stream-EXPECTED-UNVERIFIED.txt`, as written and re-split every few
bytes; `timeweb-openai-chat-completion-response.json`), streams written from SPEC.md and
OpenAI's chunk format where no transcript exists, and FakeOpenAI where a whole server is handier.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentClient,
    AgentError,
    AgentEvent,
    AgentNotFound,
    AgentProtocolError,
    AgentQuotaExceeded,
    AgentRateLimited,
    AgentRequest,
    AgentStreamCut,
    AgentTimeout,
    AgentUnavailable,
    AgentUpstreamError,
    ChatTurn,
    Finished,
    FinishReason,
    HistoryLimits,
    KeepsNoHistory,
    Started,
    SupportsBranching,
    SupportsFeedback,
    SupportsStop,
    SupportsSuggestions,
    TextDelta,
    Usage,
)
from bot.agents.openai import (
    OpenAIClient,
    build_messages,
    error_info,
    is_timeweb_host,
    map_stream_error,
    trim_history,
)
from bot.agents.registry import build_client
from bot.app import agent_http_client
from bot.config import OpenAIAgentConfig
from tests.agents.conformance import (
    USER,
    assert_redacted,
    check_contract,
    close_after_first_text,
    collect,
    connected,
    failure,
    only_failure,
    recorded,
)
from tests.fakes.openai import Completion, FakeOpenAI
from tests.transcripts import (
    Answer,
    ChunkStream,
    Recorder,
    body,
    catalogue,
    json_response,
    sse_response,
    stream_response,
)

API_KEY = "sk-SECRET-key-0001"
HEADER_SECRET = "hdr-SECRET-value-0002"
TIMEWEB_BASE = "https://agent.timeweb.cloud/api/v1/cloud-ai/agents/5b1f6c8e/v1"
SPLITS = [None, 1, 2, 3, 5, 7, 64]
STREAM = "timeweb-openai-stream-EXPECTED-UNVERIFIED.txt"
CHUNK_ID = "chatcmpl-2f6b1c0e9a"


def make_config(**overrides: Any) -> OpenAIAgentConfig:
    values: dict[str, Any] = {
        "platform": "openai",
        "name": "tw-stream",
        "title": "Timeweb streaming",
        "base_url": TIMEWEB_BASE,
        "api_key": API_KEY,
        "model": "agent",
    }
    values.update(overrides)
    return OpenAIAgentConfig.model_validate({k: v for k, v in values.items() if v is not None})


def openai(
    *answers: Answer, **overrides: Any
) -> AbstractAsyncContextManager[tuple[OpenAIClient, Recorder]]:
    return recorded(OpenAIClient, make_config(**overrides), *answers)


async def replay(data: bytes, split: int | None = None, **overrides: Any) -> list[AgentEvent]:
    async with openai(sse_response(data, split_every=split), **overrides) as (client, _):
        return await collect(client)


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage: dict[str, int] | None = None,
    choices: list[dict[str, Any]] | None = None,
) -> bytes:
    """One `chat.completion.chunk` event in OpenAI's framing."""
    payload: dict[str, Any] = {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": 1736150400,
        "model": "deepseek-v3.2",
        "choices": (
            choices
            if choices is not None
            else [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
        ),
    }
    if usage is not None:
        payload["usage"] = usage
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def text(*pieces: str) -> bytes:
    return b"".join(chunk({"content": p}) for p in pieces)


DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26}


# --- the client and its capabilities -------------------------------------------------------------


async def test_client_shape() -> None:
    async with openai(max_history_turns=5, max_history_chars=100) as (client, _):
        assert isinstance(client, AgentClient)
        assert isinstance(client, KeepsNoHistory)
        assert client.history_limits == HistoryLimits(max_turns=5, max_chars=100)
        assert (client.name, client.title, client.platform) == (
            "tw-stream",
            "Timeweb streaming",
            "openai",
        )
        for capability in (SupportsStop, SupportsFeedback, SupportsSuggestions, SupportsBranching):
            assert not isinstance(client, capability)
        for method in ("stop", "feedback", "suggestions"):
            assert not hasattr(client, method)


async def test_registered_in_the_registry() -> None:
    async with agent_http_client() as http:
        assert isinstance(build_client(make_config(), http), OpenAIClient)


# --- the Timeweb transcripts ---------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_expected_timeweb_stream(split: int | None) -> None:
    events = await replay(body(STREAM), split)
    assert events == [
        Started(message_id=CHUNK_ID, conversation=None),
        TextDelta("Привет!"),
        Finished(message_id=CHUNK_ID, conversation=None, finish_reason=FinishReason.STOP),
    ]
    check_contract(events)


async def test_request_body_and_headers() -> None:
    history = (ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello!"))
    request = AgentRequest("Сколько стоит Pro?", USER, conversation="ignored", history=history)
    async with openai(sse_response(body(STREAM)), system_prompt="Be brief.") as (client, rec):
        await collect(client, request)
    sent = rec.last
    assert (sent.method, str(sent.url)) == ("POST", f"{TIMEWEB_BASE}/chat/completions")
    assert rec.json() == {
        "model": "agent",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Сколько стоит Pro?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["x-proxy-source"] == "relaygram"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.headers["content-type"] == "application/json"


async def test_no_key_no_authorization() -> None:
    async with openai(sse_response(body(STREAM)), api_key=None) as (client, rec):
        await collect(client)
    assert "authorization" not in rec.last.headers


@pytest.mark.parametrize(
    ("base_url", "sends"),
    [
        (TIMEWEB_BASE, True),
        ("https://api.timeweb.cloud/api/v1/cloud-ai/agents/x/v1", True),
        ("https://timeweb.cloud/v1", True),
        ("https://AGENT.Timeweb.Cloud/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://eviltimeweb.cloud/v1", False),
        ("https://timeweb.cloud.example.com/v1", False),
        ("http://127.0.0.1:8000/v1", False),
    ],
)
async def test_proxy_source_only_for_timeweb_hosts(base_url: str, sends: bool) -> None:
    assert is_timeweb_host(base_url) is sends
    async with openai(sse_response(body(STREAM)), base_url=base_url) as (client, rec):
        await collect(client)
    assert ("x-proxy-source" in rec.last.headers) is sends


async def test_configured_headers_override() -> None:
    headers = {"x-proxy-source": "tg-bot", "Authorization": "Gateway abc"}
    async with openai(sse_response(body(STREAM)), headers=headers) as (client, rec):
        await collect(client)
    assert rec.last.headers["x-proxy-source"] == "tg-bot"
    assert rec.last.headers["authorization"] == "Gateway abc"


async def test_non_streaming_completion_is_accepted() -> None:
    payload = catalogue("timeweb-openai-chat-completion-response.json")
    async with openai(json_response(200, payload)) as (client, _):
        events = await collect(client)
    assert events == [
        Started(message_id=CHUNK_ID, conversation=None),
        TextDelta("Привет! Чем могу помочь?"),
        Finished(
            message_id=CHUNK_ID,
            conversation=None,
            finish_reason=FinishReason.STOP,
            usage=Usage(12, 14, 26),
        ),
    ]


async def test_non_streaming_completion_with_reasoning_and_length() -> None:
    payload = catalogue("timeweb-openai-chat-completion-response.json")
    payload["choices"][0]["message"]["reasoning_content"] = "thinking..."
    payload["choices"][0]["finish_reason"] = "length"
    async with openai(json_response(200, payload)) as (client, _):
        answer = check_contract(await collect(client))
    assert (answer.reasoning, answer.text) == ("thinking...", "Привет! Чем могу помочь?")
    assert answer.finished is not None
    assert answer.finished.finish_reason is FinishReason.LENGTH


async def test_error_object_in_a_200_json_body() -> None:
    error = {"error": {"message": "Rate limit reached", "type": "requests"}}
    async with openai(json_response(200, error)) as (client, _):
        assert type(failure(await collect(client))) is AgentRateLimited


# --- streams written from SPEC.md / OpenAI's format ----------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_text_is_assembled_exactly(split: int | None) -> None:
    pieces = ["При", "вет, ", "мир! 😀", "👍🏽\n\n- a", "\u2028b ", "naïve"]
    data = chunk({"role": "assistant", "content": ""}) + text(*pieces)
    data += chunk({}, "stop") + chunk(choices=[], usage=USAGE) + DONE
    answer = check_contract(await replay(data, split))
    assert answer.text == "".join(pieces)
    assert answer.usage == Usage(12, 14, 26)


@pytest.mark.parametrize("split", [None, 1, 4])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_kept_out_of_the_text(field: str, split: int | None) -> None:
    data = chunk({"role": "assistant", "content": ""})
    data += chunk({field: "Let me "}) + chunk({field: "think.", "content": None})
    data += text("The ", "answer.") + chunk({}, "stop") + DONE
    events = await replay(data, split)
    answer = check_contract(events)
    assert answer.reasoning == "Let me think."
    assert answer.text == "The answer."
    assert all("think" not in e.text for e in events if isinstance(e, TextDelta))


async def test_both_reasoning_fields_are_not_doubled() -> None:
    data = chunk({"reasoning_content": "hmm", "reasoning": "hmm"}) + text("ok") + DONE
    answer = check_contract(await replay(data))
    assert answer.reasoning == "hmm"


@pytest.mark.parametrize("split", [None, 1, 3])
async def test_inline_think_block_is_reasoning(split: int | None) -> None:
    data = text("<think>", "\nstep 1\n", "</think>", "\n\nDone.") + chunk({}, "stop") + DONE
    answer = check_contract(await replay(data, split))
    assert (answer.reasoning, answer.text) == ("\nstep 1\n", "Done.")


async def test_content_parts_and_other_choice_indexes() -> None:
    data = chunk({"content": [{"type": "text", "text": "a"}, {"type": "image_url"}]})
    data += chunk(choices=[{"index": 1, "delta": {"content": "other"}, "finish_reason": None}])
    data += chunk(choices=[{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}])
    data += DONE
    assert check_contract(await replay(data)).text == "ab"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("lenght", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("tool_calls", FinishReason.STOP),
        ("function_call", FinishReason.STOP),
        ("something_new", FinishReason.STOP),
    ],
)
async def test_finish_reasons(reason: str, expected: FinishReason) -> None:
    data = text("partial") + chunk({}, reason) + DONE
    answer = check_contract(await replay(data))
    assert answer.finished is not None
    assert answer.finished.finish_reason is expected
    assert answer.text == "partial"


async def test_finish_reason_error_fails_keeping_the_text() -> None:
    events = await replay(text("so far") + chunk({}, "error") + DONE)
    assert check_contract(events).text == "so far"
    assert type(failure(events)) is AgentUpstreamError


async def test_done_without_finish_reason_is_a_normal_end() -> None:
    answer = check_contract(await replay(text("a", "b") + DONE))
    assert answer.finished is not None
    assert answer.finished.finish_reason is FinishReason.STOP
    assert answer.text == "ab"


async def test_finish_reason_without_done_is_a_normal_end() -> None:
    data = text("a") + chunk({}, "length") + chunk(choices=[], usage=USAGE)
    answer = check_contract(await replay(data))
    assert answer.finished is not None
    assert answer.finished.finish_reason is FinishReason.LENGTH
    assert answer.usage == Usage(12, 14, 26)


async def test_nothing_after_done_is_read() -> None:
    data = text("a") + DONE + text("never")
    stream = ChunkStream([data[: len(data) - 10], data[len(data) - 10 :]])
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with openai(response) as (client, _):
        answer = check_contract(await collect(client))
    assert answer.text == "a"
    assert stream.closed


async def test_usage_in_the_last_chunk_with_null_usage_before() -> None:
    data = chunk({"content": "x"}, usage=None) + chunk({}, "stop")
    data = data.replace(b'"choices"', b'"usage": null, "choices"', 1)
    data += chunk(choices=[], usage=USAGE) + DONE
    answer = check_contract(await replay(data))
    assert answer.finished is not None
    assert answer.finished.usage == Usage(12, 14, 26)


@pytest.mark.parametrize("split", [None, 1, 7])
async def test_eof_without_done_or_finish_reason_is_a_cut(split: int | None) -> None:
    events = await replay(text("Hello", " wor"), split)
    answer = check_contract(events)
    assert answer.text == "Hello wor"
    assert type(failure(events)) is AgentStreamCut
    assert answer.message_id == CHUNK_ID


async def test_cut_in_the_middle_of_a_chunk() -> None:
    data = text("Hello") + text(" world")[:30]
    events = await replay(data)
    assert check_contract(events).text == "Hello"
    assert type(failure(events)) is AgentStreamCut


async def test_connection_lost_mid_stream_is_a_cut() -> None:
    response = stream_response([text("Hel")], error=httpx.RemoteProtocolError("peer closed"))
    async with openai(response) as (client, _):
        events = await collect(client)
    assert check_contract(events).text == "Hel"
    assert type(failure(events)) is AgentStreamCut


async def test_empty_stream_is_a_cut() -> None:
    events = await replay(b"")
    assert type(only_failure(events)) is AgentStreamCut


async def test_done_only_stream_finishes_empty() -> None:
    events = await replay(DONE)
    assert [type(e) for e in events] == [Finished]


async def test_comments_pings_and_blank_data_are_ignored() -> None:
    data = b": OPENROUTER PROCESSING\n\nevent: ping\ndata: {}\n\ndata: \n\n" + text("ok") + DONE
    assert check_contract(await replay(data)).text == "ok"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"message": "Rate limit reached for requests", "type": "requests"}, AgentRateLimited),
        ({"message": "x", "code": "rate_limit_exceeded"}, AgentRateLimited),
        ({"message": "Too many requests", "code": 429}, AgentRateLimited),
        (
            {"message": "You exceeded your current quota", "type": "insufficient_quota"},
            AgentQuotaExceeded,
        ),
        ({"message": "The server had an error", "type": "server_error"}, AgentUpstreamError),
        ("plain text error", AgentUpstreamError),
    ],
)
async def test_error_object_mid_stream(error: Any, expected: type[AgentError]) -> None:
    data = text("partial ") + f"data: {json.dumps({'error': error})}\n\n".encode() + text("x")
    events = await replay(data)
    assert check_contract(events).text == "partial "
    assert type(failure(events)) is expected


@pytest.mark.parametrize(
    ("data", "expected", "detail"),
    [
        (b"upstream exploded", AgentUpstreamError, "upstream exploded"),
        (b'{"message": "Rate limit hit"}', AgentRateLimited, "Rate limit hit"),
        (b'{"error": {"message": "boom", "type": "server_error"}}', AgentUpstreamError, "boom"),
    ],
)
async def test_named_error_event(data: bytes, expected: type[AgentError], detail: str) -> None:
    events = await replay(text("a") + b"event: error\ndata: " + data + b"\n\n" + text("b"))
    assert check_contract(events).text == "a"
    error = failure(events)
    assert type(error) is expected
    assert error.detail == detail


async def test_unreadable_chunk_is_a_protocol_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relaygram.agents.openai")
    events = await replay(text("Hi") + b"data: {not json\n\n")
    assert check_contract(events).text == "Hi"
    assert type(failure(events)) is AgentProtocolError
    assert any("{not json" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, headers={"content-type": "text/html"}, text="<html>login</html>"),
        httpx.Response(200, json={"object": "list"}),
    ],
)
async def test_unexpected_200_bodies_are_protocol_errors(response: httpx.Response) -> None:
    async with openai(response) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is AgentProtocolError


# --- errors before the stream --------------------------------------------------------------------


def openai_error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


HTTP_ERRORS: list[tuple[int, Any, type[AgentError], str | None]] = [
    (400, openai_error("bad", "invalid_request_error"), AgentBadRequest, "invalid_request_error"),
    (
        400,
        openai_error("too long", "invalid_request_error", "context_length_exceeded"),
        AgentBadRequest,
        "context_length_exceeded",
    ),
    (
        401,
        openai_error("Incorrect API key", "invalid_request_error", "invalid_api_key"),
        AgentAuthError,
        "invalid_api_key",
    ),
    (403, openai_error("region", "access_denied"), AgentAuthError, "access_denied"),
    (404, openai_error("no such model", "invalid_request_error"), AgentNotFound, None),
    (402, {"message": "Payment Required"}, AgentQuotaExceeded, None),
    (
        429,
        openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
        AgentRateLimited,
        "rate_limit_exceeded",
    ),
    (
        429,
        openai_error("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        AgentQuotaExceeded,
        "insufficient_quota",
    ),
    (500, openai_error("oops", "server_error"), AgentUnavailable, "server_error"),
    (503, "Service Unavailable", AgentUnavailable, None),
    (422, {"detail": [{"msg": "field required"}]}, AgentBadRequest, None),
]


@pytest.mark.parametrize(("status", "payload", "expected", "code"), HTTP_ERRORS)
async def test_http_errors(
    status: int, payload: Any, expected: type[AgentError], code: str | None
) -> None:
    response = (
        httpx.Response(status, text=payload)
        if isinstance(payload, str)
        else json_response(status, payload)
    )
    async with openai(response) as (client, _):
        events = await collect(client)
    error = only_failure(events)
    assert type(error) is expected
    assert error.status == status
    if code is not None:
        assert error.code == code


async def test_429_retry_after() -> None:
    payload = openai_error("Rate limit reached", "requests", "rate_limit_exceeded")
    async with openai(json_response(429, payload, [("Retry-After", "3")])) as (client, _):
        error = failure(await collect(client))
    assert isinstance(error, AgentRateLimited)
    assert error.retry_after == 3.0


def test_error_info_shapes() -> None:
    assert error_info({"error": {"message": "m", "type": "t", "code": None}}).label == "t"
    assert error_info({"error_code": "e", "message": "m", "status_code": 400}).code == "e"
    assert error_info({"error": "text"}).message == "text"
    assert error_info({"detail": "d"}).message == "d"
    assert error_info({"message": ["a", "b"]}).message == "a; b"
    assert error_info(["x"]).message is None
    assert type(map_stream_error({"code": "insufficient_quota"})) is AgentQuotaExceeded


# --- history -------------------------------------------------------------------------------------


def turns(*pairs: tuple[str, str]) -> tuple[ChatTurn, ...]:
    return tuple(t for q, a in pairs for t in (ChatTurn("user", q), ChatTurn("assistant", a)))


def contents(messages: Sequence[ChatTurn]) -> list[str]:
    return [m.content for m in messages]


HISTORY = turns(("q1", "a1"), ("q2", "a2"), ("q3", "a3"))


def test_trim_keeps_the_newest_turns() -> None:
    assert contents(trim_history(HISTORY, HistoryLimits(2, 1000))) == ["q2", "a2", "q3", "a3"]
    assert contents(trim_history(HISTORY, HistoryLimits(10, 1000))) == contents(HISTORY)
    assert trim_history(HISTORY, HistoryLimits(0, 1000)) == []


def test_trim_by_characters_drops_whole_turns_oldest_first() -> None:
    history = turns(("a" * 10, "b" * 10), ("c" * 10, "d" * 10), ("e" * 10, "f" * 10))
    newest_two = ["c" * 10, "d" * 10, "e" * 10, "f" * 10]
    assert contents(trim_history(history, HistoryLimits(10, 40))) == newest_two
    assert len(trim_history(history, HistoryLimits(10, 39))) == 2
    assert trim_history(history, HistoryLimits(10, 19)) == []  # the newest turn alone is 20
    assert trim_history(history, HistoryLimits(10, 0)) == []


def test_trim_never_keeps_an_answer_without_its_question() -> None:
    history = (ChatTurn("assistant", "greeting"), *turns(("q1", "a1")), ChatTurn("user", "q2"))
    assert contents(trim_history(history, HistoryLimits(2, 1000))) == ["q1", "a1", "q2"]
    assert contents(trim_history(history, HistoryLimits(3, 1000))) == contents(history)
    assert contents(trim_history(history, HistoryLimits(9, 6))) == ["q1", "a1", "q2"]


def test_trim_drops_roles_that_are_not_history() -> None:
    history = (ChatTurn("system", "old prompt"), *turns(("q", "a")), ChatTurn("tool", "x"))
    assert [m.role for m in trim_history(history, HistoryLimits(5, 1000))] == ["user", "assistant"]


def test_build_messages_system_first_and_current_message_never_dropped() -> None:
    huge = "x" * 500
    messages = build_messages("sys", HISTORY, huge, HistoryLimits(1, 4))
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "a3"},
        {"role": "user", "content": huge},
    ]
    assert build_messages(None, HISTORY, "hi", HistoryLimits(0, 0)) == [
        {"role": "user", "content": "hi"}
    ]
    assert build_messages("", (), "hi", HistoryLimits(1, 1))[0]["role"] == "user"


async def test_adapter_trims_what_it_receives() -> None:
    request = AgentRequest("now", USER, history=HISTORY)
    overrides = {"max_history_turns": 1, "max_history_chars": 100, "system_prompt": "S"}
    async with openai(sse_response(body(STREAM)), **overrides) as (client, rec):
        await collect(client, request)
    assert [m["content"] for m in rec.json()["messages"]] == ["S", "q3", "a3", "now"]


# --- transport -----------------------------------------------------------------------------------


async def test_silence_timeout_between_chunks() -> None:
    pieces = [text("Hello"), text(" there"), text(" never"), DONE]
    stream = ChunkStream(pieces, delays=[0, 0, 5.0, 0])
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with openai(response, silence_timeout=0.05) as (client, _):
        events = await asyncio.wait_for(collect(client), timeout=2)
    answer = check_contract(events)
    assert answer.text == "Hello there"
    assert type(failure(events)) is AgentTimeout
    assert stream.closed


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), AgentUnavailable),
        (httpx.ReadTimeout("silent"), AgentTimeout),
    ],
)
async def test_transport_failures(exc: Exception, expected: type[AgentError]) -> None:
    async with openai(exc) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is expected


async def test_closing_the_iterator_closes_the_stream() -> None:
    stream = ChunkStream([text("a"), text("b"), text("c"), DONE])
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with openai(response) as (client, _):
        await close_after_first_text(client)
    assert stream.closed
    assert stream.sent < len(stream.chunks)


# --- check ---------------------------------------------------------------------------------------


async def test_check_counts_models() -> None:
    models = {"object": "list", "data": [{"id": "a"}, {"id": "b"}]}
    async with openai(json_response(200, models)) as (client, rec):
        assert await client.check() == "OpenAI-compatible endpoint, 2 models"
    assert (rec.last.method, str(rec.last.url)) == ("GET", f"{TIMEWEB_BASE}/models")
    assert rec.last.headers["authorization"] == f"Bearer {API_KEY}"
    assert rec.last.headers["x-proxy-source"] == "relaygram"
    async with openai(json_response(200, {"data": [{"id": "a"}]})) as (client, _):
        assert await client.check() == "OpenAI-compatible endpoint, 1 model"
    async with openai(json_response(200, {"weird": True})) as (client, _):
        assert await client.check() == "OpenAI-compatible endpoint (reachable)"


async def test_check_without_models_endpoint() -> None:
    async with openai(httpx.Response(404, text="Not Found")) as (client, _):
        assert await client.check() == "OpenAI-compatible endpoint (no /models)"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (json_response(401, openai_error("bad key", "invalid_request_error")), AgentAuthError),
        (httpx.Response(502, text="Bad Gateway"), AgentUnavailable),
        (httpx.ConnectError("refused"), AgentUnavailable),
    ],
)
async def test_check_failures(answer: Answer, expected: type[AgentError]) -> None:
    async with openai(answer) as (client, _):
        with pytest.raises(expected):
            await client.check()


# --- secrets -------------------------------------------------------------------------------------


def _echo_auth(request: httpx.Request) -> httpx.Response:
    """A hostile gateway that quotes the credentials back in its error message."""
    quoted = f"{request.headers['authorization']} / {request.headers['x-gateway-token']}"
    return json_response(401, openai_error(f"Bad key {quoted}", "invalid_request_error"))


def _stream_quoting_secrets(request: httpx.Request) -> httpx.Response:
    error = {"message": f"upstream said key={API_KEY} token={HEADER_SECRET}", "type": "x"}
    return sse_response(text("a") + f"data: {json.dumps({'error': error})}\n\n".encode())


def _garbage_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return sse_response(f"data: {{oops {API_KEY} {HEADER_SECRET}\n\n".encode())


def _text_error_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return sse_response(f"event: error\ndata: {API_KEY} {HEADER_SECRET}\n\n".encode())


@pytest.mark.parametrize(
    "answer",
    [
        _echo_auth,
        _stream_quoting_secrets,
        _garbage_quoting_secrets,
        _text_error_quoting_secrets,
        httpx.ConnectError(f"cannot reach, key {API_KEY} {HEADER_SECRET}"),
    ],
    ids=["echoed-auth", "error-chunk", "garbage", "error-event", "connect-error"],
)
async def test_secrets_never_reach_errors_or_logs(
    answer: Answer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with openai(answer, headers={"X-Gateway-Token": HEADER_SECRET}) as (client, recorder):
        events = await collect(client)
    assert recorder.last.headers["authorization"] == f"Bearer {API_KEY}"  # really sent
    error = failure(events)
    texts = [str(error), error.detail, repr(error)]
    texts += [r.getMessage() for r in caplog.records]
    assert_redacted(texts, API_KEY, HEADER_SECRET)


# --- against FakeOpenAI --------------------------------------------------------------------------


def fake_client(fake: FakeOpenAI, **overrides: Any) -> AbstractAsyncContextManager[OpenAIClient]:
    overrides.setdefault("base_url", f"https://llm.example{fake.base_path}")
    overrides.setdefault("api_key", fake.api_key)
    return connected(OpenAIClient, make_config(**overrides), fake.transport())


async def test_fake_streams_text_reasoning_and_usage() -> None:
    script = Completion(chunks=["Привет", ", ", "мир"], reasoning=["hmm ", "ok"], delay=0.001)
    fake = FakeOpenAI(api_key="k", default=script)
    async with fake_client(fake) as client:
        answer = check_contract(await collect(client))
    assert (answer.text, answer.reasoning) == ("Привет, мир", "hmm ok")
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3
    assert answer.message_id == fake.runs[0].id
    assert fake.runs[0].completed
    assert fake.calls[0].headers["authorization"] == "<present>"
    assert "x-proxy-source" not in fake.calls[0].headers


async def test_fake_records_the_messages_it_received() -> None:
    fake = FakeOpenAI()
    history = turns(("one", "Echo: one"))
    async with fake_client(fake, api_key=None, system_prompt="S") as client:
        answer = check_contract(await collect(client, AgentRequest("two", USER, history=history)))
    assert answer.text == "Echo: two"
    assert fake.received == [
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "Echo: one"},
            {"role": "user", "content": "two"},
        ]
    ]


@pytest.mark.parametrize(
    ("script", "expected", "text_"),
    [
        (Completion(chunks=["a", "b", "c"], error_after=2), AgentUpstreamError, "ab"),
        (
            Completion(
                chunks=["a"],
                error_after=1,
                error={"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"},
            ),
            AgentRateLimited,
            "a",
        ),
        (Completion(chunks=["a", "b"], cut_after=1), AgentStreamCut, "a"),
        (Completion(chunks=["a"], finish_reason=None, send_done=False), AgentStreamCut, "a"),
        (
            Completion(http_status=429, http_body=openai_error("quota", "insufficient_quota")),
            AgentQuotaExceeded,
            "",
        ),
    ],
)
async def test_fake_failures(script: Completion, expected: type[AgentError], text_: str) -> None:
    async with fake_client(FakeOpenAI(default=script)) as client:
        events = await collect(client)
    assert check_contract(events).text == text_
    assert type(failure(events)) is expected


async def test_fake_endings() -> None:
    fake = FakeOpenAI(
        scripts={
            "no-done": Completion(chunks=["x"], send_done=False),
            "no-finish": Completion(chunks=["x"], finish_reason=None),
            "long": Completion(chunks=["x"], finish_reason="length", send_usage=False),
        }
    )
    async with fake_client(fake) as client:
        for message, reason in [
            ("no-done", FinishReason.STOP),
            ("no-finish", FinishReason.STOP),
            ("long", FinishReason.LENGTH),
        ]:
            answer = check_contract(await collect(client, AgentRequest(message, USER)))
            assert answer.finished is not None
            assert answer.finished.finish_reason is reason
    assert fake.runs[2].completed


async def test_fake_stop_is_closing_the_stream() -> None:
    fake = FakeOpenAI(default=Completion(chunks=[f"c{i} " for i in range(50)], delay=0.001))
    async with fake_client(fake) as client:
        events = client.stream(AgentRequest("long", USER))
        seen = [await anext(events) for _ in range(4)]
        await events.aclose()
    assert [type(e) for e in seen] == [Started, TextDelta, TextDelta, TextDelta]
    assert fake.runs[0].closed_early
    assert fake.runs[0].chunks_sent < 50


async def test_fake_silence_timeout() -> None:
    fake = FakeOpenAI(default=Completion(chunks=["a", "b"], delay=5.0))
    async with fake_client(fake, silence_timeout=0.05) as client:
        events = await asyncio.wait_for(collect(client), timeout=2)
    assert check_contract(events).text == "a"
    assert type(failure(events)) is AgentTimeout


async def test_fake_as_timeweb_compatible_endpoint_and_check() -> None:
    base_path = "/api/v1/cloud-ai/agents/5b1f6c8e/v1"
    fake = FakeOpenAI(api_key="tw", base_path=base_path, models=("a", "b", "c"))
    async with fake_client(fake, base_url=f"https://agent.timeweb.cloud{base_path}") as client:
        assert check_contract(await collect(client)).text == "Echo: hi"
        assert await client.check() == "OpenAI-compatible endpoint, 3 models"
    assert all(c.headers["x-proxy-source"] == "relaygram" for c in fake.calls)
    fake.models_endpoint = False
    fake.fail_next(401, openai_error("bad", "invalid_request_error", "invalid_api_key"))
    async with fake_client(fake) as client:
        assert await client.check() == "OpenAI-compatible endpoint (no /models)"
        assert type(failure(await collect(client))) is AgentAuthError
    async with fake_client(fake, api_key="wrong") as client:
        assert type(failure(await collect(client))) is AgentAuthError


async def test_fake_non_streaming_request() -> None:
    fake = FakeOpenAI()
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        response = await http.post(
            "https://llm.example/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "a b"}]},
        )
    assert response.json()["choices"][0]["message"]["content"] == "Echo: a b"
