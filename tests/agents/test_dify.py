"""Conformance suite for the Dify Service API adapter.

Every stream goes through a real `httpx.AsyncClient` over `httpx.MockTransport`, replaying the
traffic recorded from a live Dify 0.15.3 (`dify-0.15.3-live/`) and the hand-written transcripts,
as recorded and re-split at arbitrary byte offsets. FakeDify and its HTTP server are used where
the test needs a server with state (stop, conversations).
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
    AnswerRef,
    ConversationNotFound,
    Finished,
    FinishReason,
    Rating,
    ReasoningDelta,
    Source,
    Sources,
    Started,
    SupportsFeedback,
    SupportsStop,
    SupportsSuggestions,
    TextDelta,
    TextReplace,
    Usage,
)
from bot.agents.dify import (
    DifyClient,
    ThinkingSplitter,
    map_http_error,
    map_stream_error,
    sources_from_resources,
)
from bot.agents.http import (
    iter_sse,
    make_timeout,
    merge_headers,
    parse_retry_after,
    read_body,
    redact,
    transport_error,
)
from bot.app import agent_http_client
from bot.config import DifyAgentConfig
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
from tests.fakes.dify import FakeApp, FakeDify, Script
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

API_KEY = "app-SECRET-key-0001"
HEADER_SECRET = "hdr-SECRET-value-0002"
BASE_URL = "https://dify.example/v1"
SPLITS = [None, 1, 7, 64]  # as recorded, and re-split across events and UTF-8 sequences


def make_config(**overrides: Any) -> DifyAgentConfig:
    values: dict[str, Any] = {
        "platform": "dify",
        "name": "support",
        "title": "Support",
        "base_url": BASE_URL,
        "api_key": API_KEY,
        "inputs": {},
    }
    values.update(overrides)
    return DifyAgentConfig.model_validate(values)


def dify(
    *answers: Answer, **overrides: Any
) -> AbstractAsyncContextManager[tuple[DifyClient, Recorder]]:
    return recorded(DifyClient, make_config(**overrides), *answers)


async def replay(key: str, split: int | None = None, **overrides: Any) -> list[AgentEvent]:
    async with dify(live(key).response.replay(split_every=split), **overrides) as (client, _):
        return await collect(client)


async def replay_text(
    name: str, split: int | None = None, data: bytes | None = None
) -> list[AgentEvent]:
    raw = body(name) if data is None else data
    async with dify(sse_response(raw, split_every=split)) as (client, _):
        return await collect(client)


ECHO = "This is a deterministic reply from the fake LLM."


# --- the client and its capabilities -------------------------------------------------------------


async def test_client_shape() -> None:
    async with dify() as (client, _):
        assert isinstance(client, AgentClient)
        assert isinstance(client, SupportsStop)
        assert isinstance(client, SupportsFeedback)
        assert isinstance(client, SupportsSuggestions)
        assert (client.name, client.title, client.platform) == ("support", "Support", "dify")
        assert client.feedback_clearable is True


def test_timeouts_use_silence_as_read_timeout() -> None:
    timeout = make_timeout(make_config(silence_timeout=42, connect_timeout=3))
    assert (timeout.connect, timeout.read, timeout.pool) == (3, 42, 3)


def test_configured_headers_are_applied_last() -> None:
    merged = merge_headers(
        {"Authorization": "Bearer a", "Accept": "x"},
        make_config(headers={"authorization": "Gateway b", "X-Extra": "1"}).headers,
    )
    assert merged == {"authorization": "Gateway b", "accept": "x", "x-extra": "1"}


def test_redact_longest_secret_first() -> None:
    assert redact("key abc-123 and abc", ["abc", "abc-123", ""]) == "key *** and ***"


async def test_iter_sse_rejects_other_content_types() -> None:
    response = httpx.Response(200, headers={"content-type": "text/html"}, text="<html>")
    with pytest.raises(AgentProtocolError):
        [event async for event in iter_sse(response)]


async def test_read_body_is_bounded() -> None:
    stream = ChunkStream([b"x" * 1000] * 10)
    response = httpx.Response(500, stream=stream)
    assert len(await read_body(response, limit=2500)) == 2500
    assert stream.sent == 3


@pytest.mark.parametrize(
    ("exc", "started", "expected"),
    [
        (httpx.ConnectError("refused"), False, AgentUnavailable),
        (httpx.ConnectTimeout("slow"), False, AgentUnavailable),
        # how httpx-aiohttp, for one, reports a connection reset mid-body
        (httpx.ConnectTimeout("reset"), True, AgentStreamCut),
        (httpx.ReadTimeout("silent"), True, AgentTimeout),
        (httpx.PoolTimeout("busy"), False, AgentTimeout),
        (httpx.RemoteProtocolError("closed"), False, AgentUnavailable),
        (httpx.RemoteProtocolError("closed"), True, AgentStreamCut),
        (httpx.ReadError("reset"), True, AgentStreamCut),
        (httpx.DecodingError("bad gzip"), True, AgentProtocolError),
        (httpx.UnsupportedProtocol("ftp"), False, AgentUnavailable),
    ],
)
def test_transport_error_mapping(exc: httpx.HTTPError, started: bool, expected: type) -> None:
    assert type(transport_error(exc, started=started)) is expected


# --- streams: chat apps (live 0.15.3) ------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_04_new_conversation(split: int | None) -> None:
    exchange = live("04")
    recorded = exchange.request
    async with dify(exchange.response.replay(split_every=split), inputs={"topic": "testing"}) as (
        client,
        recorder,
    ):
        events = await collect(client, AgentRequest("hello there", USER))

    answer = check_contract(events)
    assert answer.text == f"Echo: hello there. {ECHO}"
    assert events[0] == Started(
        task_id="fefad995-1bfb-43e6-929c-7a0e049d4f48",
        message_id="935a755f-04bb-4753-81f7-0a3f09086205",
        conversation="73f90e2f-3b5e-4bbc-afd8-0b7313f5c089",
    )
    assert events[-1] == Finished(
        message_id="935a755f-04bb-4753-81f7-0a3f09086205",
        conversation="73f90e2f-3b5e-4bbc-afd8-0b7313f5c089",
        finish_reason=FinishReason.STOP,
        usage=Usage(prompt_tokens=10, completion_tokens=12, total_tokens=22),
    )
    sent = recorder.last
    assert (sent.method, sent.url.path) == (recorded.method, recorded.path)
    # The recorded body plus an explicit new conversation and automatic naming.
    assert recorder.json() == {**recorded.json(), "conversation_id": "", "auto_generate_name": True}
    assert recorder.json()["user"].startswith("tg-")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "text/event-stream"


async def test_05_continued_conversation_sends_its_id() -> None:
    exchange = live("05")
    conversation = "73f90e2f-3b5e-4bbc-afd8-0b7313f5c089"
    async with dify(exchange.response.replay()) as (client, recorder):
        events = await collect(client, AgentRequest("second turn", USER, conversation=conversation))
    assert check_contract(events).text == f"Echo: second turn. {ECHO}"
    assert recorder.json() == {**exchange.request.json(), "auto_generate_name": True}
    assert "parent_message_id" not in recorder.json()


async def test_parent_message_id_is_sent_only_when_given() -> None:
    async with dify(live("05").response.replay()) as (client, recorder):
        request = AgentRequest("x", USER, conversation="c-1", parent_message_id="m-0")
        await collect(client, request)
    assert recorder.json()["parent_message_id"] == "m-0"
    assert recorder.json()["conversation_id"] == "c-1"


async def test_configured_inputs_and_headers_are_sent() -> None:
    overrides: dict[str, Any] = {"inputs": {"topic": "x", "n": 2}, "headers": {"X-Gw": "v"}}
    async with dify(live("04").response.replay(), **overrides) as (client, recorder):
        await collect(client)
    assert recorder.json()["inputs"] == {"topic": "x", "n": 2}
    assert recorder.last.headers["x-gw"] == "v"


@pytest.mark.parametrize("split", [None, 1, 2, 3, 5, 7])
async def test_07_unicode_is_exact(split: int | None) -> None:
    answer = check_contract(await replay("07", split))
    assert answer.text == "Привет, мир! 你好，世界。😀👍🏽 naïve café — done."


REASONING = "Let me think step by step about this deterministic question."


@pytest.mark.parametrize("split", [*SPLITS, 3, 11])
async def test_08_reasoning_is_separated(split: int | None) -> None:
    events = await replay("08", split)
    answer = check_contract(events)
    assert answer.reasoning == REASONING
    assert answer.text == f"Echo: reason about it. {ECHO}"
    assert answer.text.startswith("Echo:")
    assert not any("<" in e.text for e in events if isinstance(e, TextDelta | ReasoningDelta))


async def test_09_stopped_stream_ends_with_an_ordinary_finish() -> None:
    answer = check_contract(await replay("09"))
    assert answer.text == "".join(f"chunk{i:02d} " for i in range(12))
    assert answer.finished is not None
    assert answer.finished.finish_reason is FinishReason.STOP


async def test_11_long_stream_runs_to_completion() -> None:
    answer = check_contract(await replay("11", 13))
    assert answer.finished is not None
    assert answer.text.count("chunk") == 60


@pytest.mark.parametrize("split", SPLITS)
async def test_32_slow_first_token_with_pings(split: int | None) -> None:
    exchange = live("32")
    assert exchange.response.body.startswith(b"event: ping\n\n")
    events = await replay("32", split)
    answer = check_contract(events)
    assert answer.text == f"Echo: slowstart please. {ECHO}"
    assert isinstance(events[0], Started)
    assert events[0].task_id == "3fb844dd-efe2-41a5-9f2c-0b77f8e84fbb"


async def test_33_error_event_before_any_text() -> None:
    events = await replay("33")
    answer = check_contract(events)
    assert answer.text == ""
    error = failure(events)
    assert type(error) is AgentUpstreamError
    assert (error.status, error.code) == (400, "completion_request_error")
    assert "fake upstream failure" in error.detail
    # Error events carry no task_id, but the conversation Dify created is kept.
    assert events[0] == Started(
        task_id=None,
        message_id="d002a4e1-9583-4444-88ad-bc8c162a4833",
        conversation="2336cc21-b21d-47cd-9bf9-ef8da358eec2",
    )


@pytest.mark.parametrize("split", SPLITS)
async def test_35_mid_stream_error_keeps_partial_text(split: int | None) -> None:
    events = await replay("35", split)
    answer = check_contract(events)
    assert answer.text == "Echo: midfail please. "
    assert type(failure(events)) is AgentUpstreamError
    assert answer.conversation == "c2bf51ed-5c63-4169-85ce-a66549761c14"


async def test_34_blocking_upstream_error_before_the_stream() -> None:
    events = await replay("34")
    assert len(events) == 1
    error = failure(events)
    assert type(error) is AgentUpstreamError
    assert (error.status, error.code) == (400, "completion_request_error")


@pytest.mark.parametrize("key", ["26", "27"])
async def test_26_27_auth_errors(key: str) -> None:
    events = await replay(key)
    assert len(events) == 1
    error = failure(events)
    assert type(error) is AgentAuthError
    assert (error.status, error.code) == (401, "unauthorized")


@pytest.mark.parametrize("key", ["30", "31", "59"])
async def test_unknown_conversation(key: str) -> None:
    events = await replay(key)
    error = only_failure(events)
    assert type(error) is ConversationNotFound
    assert error.detail == "Conversation Not Exists."


async def test_06_blocking_json_where_a_stream_was_asked_is_a_protocol_error() -> None:
    events = await replay("06")
    assert type(only_failure(events)) is AgentProtocolError


# --- streams: agent-chat and chatflow ------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_36_agent_tool_call_text_only_from_agent_message(split: int | None) -> None:
    answer = check_contract(await replay("36", split))
    assert answer.text == "The tool said: 2026-11-22 13:24:45"
    assert answer.reasoning == ""
    assert answer.message_id == "20e7cb63-e3c3-4761-b1a6-2d8a24f15459"


async def test_37_agent_plain() -> None:
    answer = check_contract(await replay("37"))
    assert answer.text == f"Echo: hello agent. {ECHO}"


async def test_38_agent_blocking_rejected_is_a_bad_request() -> None:
    error = failure(await replay("38"))
    assert type(error) is AgentBadRequest
    assert error.code == "invalid_param"


async def test_hand_written_agent_chat_stream() -> None:
    answer = check_contract(await replay_text("dify-agent-chat-stream.txt"))
    assert answer.text == "It's 08:01 UTC right now."


@pytest.mark.parametrize("split", SPLITS)
async def test_advanced_chat_ignores_workflow_events(split: int | None) -> None:
    events = await replay_text("dify-advanced-chat-stream.txt", split)
    answer = check_contract(events)
    assert answer.text == "Hello there!"
    assert isinstance(events[0], Started)
    assert events[0].task_id == "c0ffee00-1111-4222-8333-444455556666"
    assert events[-1] == Finished(
        message_id="2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
        conversation="7d1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
        usage=Usage(prompt_tokens=21, completion_tokens=3, total_tokens=24),
    )


async def test_stopped_chatflow_reports_stopped() -> None:
    data = body("dify-advanced-chat-stream.txt").replace(
        b'"status": "succeeded", "outputs": {"answer"', b'"status": "stopped", "outputs": {"answer"'
    )
    answer = check_contract(await replay_text("", data=data))
    assert answer.finished is not None
    assert answer.finished.finish_reason is FinishReason.STOPPED


# --- streams: hand-written edge cases ------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_chat_stream_with_citations(split: int | None) -> None:
    events = await replay_text("dify-chat-stream.txt", split)
    answer = check_contract(events)
    assert answer.text == "Привет! Our Pro plan costs $29/month.\n\n- Unlimited agents"
    assert events[-2] == Sources((Source("pricing.md"),))
    assert answer.usage == Usage(412, 19, 431)


@pytest.mark.parametrize("split", SPLITS)
async def test_1x_orjson_raw_utf8(split: int | None) -> None:
    answer = check_contract(await replay_text("dify-chat-stream-1x-orjson.txt", split))
    assert answer.text == "Привет! Our Pro plan costs $29/month.\n\n- Unlimited agents"


@pytest.mark.parametrize("split", SPLITS)
async def test_1x_raw_line_separators_inside_data_are_not_line_breaks(split: int | None) -> None:
    original = body("dify-chat-stream-1x-orjson.txt")
    data = original.replace('"Привет"'.encode(), '"При\u2028вет\u2029\x85"'.encode())
    assert data != original
    # Universal-newline splitting would break these events apart; SSE splitting must not.
    text = data.decode()
    assert len(text.splitlines()) > len(text.split("\n"))
    answer = check_contract(await replay_text("", split, data=data))
    assert answer.text.startswith("При\u2028вет\u2029\x85! Our Pro plan")
    assert answer.finished is not None


@pytest.mark.parametrize("split", SPLITS)
async def test_olares_gateway_cut_keeps_partial_text_and_conversation(split: int | None) -> None:
    events = await replay_text("dify-olares-gateway-truncated-stream.txt", split)
    answer = check_contract(events)
    assert answer.text == "Here is a long essay about distributed"
    assert type(failure(events)) is AgentStreamCut
    assert answer.started is not None
    assert answer.conversation == "3f9a6c2e-1b7d-4e8a-9c5f-0a1b2c3d4e5f"
    assert answer.started.task_id == "aa00bb11-cc22-4d33-8e44-ff5566778899"


async def test_hand_written_error_stream_is_rate_limited_by_wording() -> None:
    events = await replay_text("dify-error-stream.txt")
    answer = check_contract(events)
    assert answer.text == "Sure, here"
    error = failure(events)
    assert type(error) is AgentRateLimited
    assert error.code == "completion_request_error"


async def test_message_file_event_alone_is_ignored() -> None:
    events = await replay_text("dify-message-file-event.txt")
    answer = check_contract(events)
    assert answer.text == ""
    assert isinstance(events[0], Started)
    assert type(failure(events)) is AgentStreamCut  # no message_end in this excerpt


async def test_message_file_event_inside_a_stream_is_ignored() -> None:
    recorded = live("04").response.body
    first_end = recorded.index(b"\n\n") + 2
    data = recorded[:first_end] + body("dify-message-file-event.txt") + recorded[first_end:]
    answer = check_contract(await replay_text("", data=data))
    assert answer.text == f"Echo: hello there. {ECHO}"
    assert answer.finished is not None


def _event(payload: dict[str, Any]) -> bytes:
    envelope = {"conversation_id": "c-1", "message_id": "m-1", "created_at": 1, "task_id": "t-1"}
    return f"data: {json.dumps({**envelope, **payload})}\n\n".encode()


async def test_message_replace_replaces_the_text() -> None:
    data = b"".join(
        [
            _event({"event": "message", "id": "m-1", "answer": "bad words"}),
            _event({"event": "message_replace", "answer": "This answer was moderated."}),
            _event({"event": "message_end", "id": "m-1", "metadata": {}}),
        ]
    )
    events = await replay_text("", data=data)
    assert TextReplace("This answer was moderated.") in events
    assert check_contract(events).text == "This answer was moderated."


async def test_unreadable_data_is_a_protocol_error_after_the_partial_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="relaygram.agents.dify")
    garbage = "{not json " + "x" * 500
    data = (
        _event({"event": "message", "id": "m-1", "answer": "Hi"}) + f"data: {garbage}\n\n".encode()
    )
    events = await replay_text("", data=data)
    assert check_contract(events).text == "Hi"
    assert type(failure(events)) is AgentProtocolError
    logged = [r.getMessage() for r in caplog.records]
    assert any("{not json xxx" in m for m in logged)
    assert all("x" * 250 not in m for m in logged), "only the first 200 characters are logged"


@pytest.mark.parametrize(
    "payload",
    [
        '["a list"]',
        '{"no_event": 1}',
        '{"event": "message", "answer": 5, "task_id": "t"}',
    ],
)
async def test_unknown_json_shapes_are_protocol_errors(payload: str) -> None:
    events = await replay_text("", data=f"data: {payload}\n\n".encode())
    assert type(failure(events)) is AgentProtocolError


async def test_unknown_event_types_are_ignored() -> None:
    data = b"".join(
        [
            _event({"event": "tts_message", "audio": "AAAA"}),
            _event({"event": "node_retry", "data": {}}),
            _event({"event": "message", "id": "m-1", "answer": "ok"}),
            b": a comment line\n\n",
            _event({"event": "message_end", "id": "m-1", "metadata": {}}),
        ]
    )
    assert check_contract(await replay_text("", data=data)).text == "ok"


# --- transport failures --------------------------------------------------------------------------


async def test_silence_timeout_between_chunks() -> None:
    chunks = live("04").response.chunks
    stream = ChunkStream(chunks, delays=[0, 0, 5.0] + [0] * len(chunks))
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with dify(response, silence_timeout=0.05) as (client, _):
        events = await asyncio.wait_for(collect(client), timeout=2)
    answer = check_contract(events)
    assert answer.text == "Echo: hello "
    assert type(failure(events)) is AgentTimeout
    assert stream.closed


async def test_read_timeout_before_headers() -> None:
    async with dify(httpx.ReadTimeout("timed out")) as (client, _):
        events = await collect(client)
    assert type(only_failure(events)) is AgentTimeout


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("[Errno 111] Connection refused"), httpx.ConnectTimeout("slow")]
)
async def test_connect_failure_is_unavailable(exc: Exception) -> None:
    async with dify(exc) as (client, _):
        events = await collect(client)
    error = only_failure(events)
    assert type(error) is AgentUnavailable
    assert "dify.example" in error.detail


@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadError("connection reset"),
    ],
)
async def test_connection_lost_mid_stream_is_a_cut(exc: Exception) -> None:
    chunks = live("04").response.chunks[:3]
    async with dify(stream_response(chunks, error=exc)) as (client, _):
        events = await collect(client)
    answer = check_contract(events)
    assert answer.text == "Echo: hello there. "
    assert type(failure(events)) is AgentStreamCut
    assert answer.conversation == "73f90e2f-3b5e-4bbc-afd8-0b7313f5c089"


async def test_closing_the_stream_early_closes_the_response() -> None:
    stream = ChunkStream(live("04").response.chunks)
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    async with dify(response) as (client, _):
        await close_after_first_text(client)
    assert stream.closed
    assert stream.sent < len(stream.chunks)


# --- errors before the stream --------------------------------------------------------------------

HTTP_ERROR_CLASSES: dict[str, type[AgentError]] = {
    "400_agent_blocking": AgentBadRequest,
    "400_missing_user": AgentBadRequest,
    "400_not_chat_app": AgentBadRequest,
    "400_app_unavailable": AgentBadRequest,
    "400_provider_not_initialize": AgentBadRequest,
    "400_conversation_completed": ConversationNotFound,
    "400_completion_request_error": AgentUpstreamError,
    "401_service_api_bad_key": AgentAuthError,
    "401_console_flask_login": AgentAuthError,
    "403_api_disabled": AgentAuthError,
    "404_conversation": ConversationNotFound,
    "404_message": AgentNotFound,
    "404_olares_gateway_app_not_registered": AgentNotFound,
    "429_app_concurrency": AgentRateLimited,
    "429_model_rate_limit": AgentRateLimited,
    "500_internal": AgentUnavailable,
}


def test_every_catalogued_http_error_has_an_expectation() -> None:
    entries = {k for k in catalogue("dify-http-errors.json") if not k.startswith("_")}
    assert entries == set(HTTP_ERROR_CLASSES)


@pytest.mark.parametrize("entry", sorted(HTTP_ERROR_CLASSES))
async def test_catalogued_http_errors(entry: str) -> None:
    payload = catalogue("dify-http-errors.json")[entry]
    status = int(entry.split("_", 1)[0])
    async with dify(json_response(status, payload)) as (client, _):
        events = await collect(client)
    error = only_failure(events)
    assert type(error) is HTTP_ERROR_CLASSES[entry]
    assert (error.status, error.code, error.detail) == (status, payload["code"], payload["message"])


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (402, {"code": "quota", "message": "Pay up"}, AgentQuotaExceeded),
        (400, {"code": "provider_quota_exceeded", "message": "quota"}, AgentQuotaExceeded),
        (
            400,
            {"code": "completion_request_error", "message": "Rate limit reached"},
            AgentRateLimited,
        ),
        (
            400,
            {"code": "completion_request_error", "message": "You exceeded your current quota"},
            AgentQuotaExceeded,
        ),
        (400, {"code": "invalid_param", "message": "x", "params": "query"}, AgentBadRequest),
        (413, {"code": "file_too_large", "message": "x"}, AgentBadRequest),
        (503, {"code": "x", "message": "Service Unavailable"}, AgentUnavailable),
        (404, {"code": "not_found", "message": "The requested URL was not found"}, AgentNotFound),
        (302, {"code": "x", "message": "moved"}, AgentProtocolError),
    ],
)
async def test_more_http_errors(status: int, payload: dict[str, str], expected: type) -> None:
    async with dify(json_response(status, payload)) as (client, _):
        error = failure(await collect(client))
    assert type(error) is expected


async def test_gateway_text_500_is_unavailable() -> None:
    response = httpx.Response(500, text="Failed to call app chat message API")
    async with dify(response) as (client, _):
        error = failure(await collect(client))
    assert type(error) is AgentUnavailable
    assert error.detail == "Failed to call app chat message API"


async def test_huge_error_body_is_read_only_in_part() -> None:
    stream = ChunkStream([b"<html>" + b"x" * 65536] * 100)
    response = httpx.Response(502, headers={"content-type": "text/html"}, stream=stream)
    async with dify(response) as (client, _):
        error = failure(await collect(client))
    assert type(error) is AgentUnavailable
    assert len(error.detail) <= 201
    assert stream.sent <= 2


async def test_429_retry_after() -> None:
    payload = catalogue("dify-http-errors.json")["429_app_concurrency"]
    async with dify(json_response(429, payload, [("Retry-After", "7")])) as (client, _):
        error = failure(await collect(client))
    assert isinstance(error, AgentRateLimited)
    assert error.retry_after == 7.0


def test_retry_after_http_date() -> None:
    headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert parse_retry_after(headers, now=1445412480.0) == 30.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None


def test_map_http_error_conversation_only_on_404_wording() -> None:
    assert (
        type(map_http_error(404, "not_found", "Conversation Not Exists.")) is ConversationNotFound
    )
    assert type(map_http_error(404, "not_found", "Message Not Exists.")) is AgentNotFound


@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        ("completion_request_error", 400, "[openai] Error: boom", AgentUpstreamError),
        ("completion_request_error", 400, "Error code: 429 - slow down", AgentRateLimited),
        ("completion_request_error", 400, "insufficient_quota", AgentQuotaExceeded),
        ("rate_limit_error", 429, "Rate Limit Error", AgentRateLimited),
        ("provider_quota_exceeded", 400, "Your quota ...", AgentQuotaExceeded),
        ("provider_not_initialize", 400, "No valid model provider credentials", AgentBadRequest),
        ("model_currently_not_support", 400, "Dify Hosted OpenAI ...", AgentBadRequest),
        ("internal_server_error", 500, "Internal Server Error", AgentUpstreamError),
        ("invalid_param", 400, "Run failed: node LLM failed", AgentUpstreamError),
        (None, None, "?", AgentUpstreamError),
    ],
)
def test_stream_error_mapping(
    code: str | None, status: int | None, message: str, expected: type
) -> None:
    assert type(map_stream_error(code, status, message)) is expected


# --- stop ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["10", "12", "13"])
async def test_stop_request(key: str) -> None:
    exchange = live(key)
    task_id = exchange.request.path.split("/")[-2]
    async with dify(exchange.response.replay()) as (client, recorder):
        await client.stop(task_id, exchange.request.json()["user"])
    sent = recorder.last
    assert (sent.method, sent.url.path) == ("POST", exchange.request.path)
    assert recorder.json() == exchange.request.json()
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


async def test_stop_failure_raises() -> None:
    async with dify(json_response(401, {"code": "unauthorized", "message": "no"})) as (client, _):
        with pytest.raises(AgentAuthError):
            await client.stop("t", USER)
    async with dify(httpx.ConnectError("refused")) as (client, _):
        with pytest.raises(AgentUnavailable):
            await client.stop("t", USER)


# --- feedback ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "rating"), [("14", Rating.LIKE), ("15", Rating.DISLIKE), ("16", None)]
)
async def test_feedback(key: str, rating: Rating | None) -> None:
    exchange = live(key)
    message_id = exchange.request.path.split("/")[-2]
    async with dify(exchange.response.replay()) as (client, recorder):
        await client.feedback(AnswerRef(message_id, USER), rating)
    assert recorder.last.url.path == exchange.request.path
    recorded = {k: v for k, v in exchange.request.json().items() if k != "content"}
    assert recorder.json() == recorded
    assert json.loads(recorder.last.content)["rating"] == (rating.value if rating else None)


@pytest.mark.parametrize("key", ["17", "18"])
async def test_feedback_unknown_message(key: str) -> None:
    exchange = live(key)
    message_id = exchange.request.path.split("/")[-2]
    async with dify(exchange.response.replay()) as (client, _):
        with pytest.raises(AgentNotFound) as caught:
            await client.feedback(
                AnswerRef(message_id, exchange.request.json()["user"]), Rating.LIKE
            )
    assert caught.value.status == 404


# --- suggestions ---------------------------------------------------------------------------------


async def test_19_suggestions() -> None:
    exchange = live("19")
    message_id = exchange.request.path.split("/")[-2]
    async with dify(exchange.response.replay()) as (client, recorder):
        questions = await client.suggestions(AnswerRef(message_id, USER))
    assert questions == ["What else can you do?", "Tell me more", "Give an example"]
    assert recorder.last.url.path == exchange.request.path
    assert dict(recorder.last.url.params) == exchange.request.query == {"user": USER}


async def test_20_suggestions_unknown_message() -> None:
    async with dify(live("20").response.replay()) as (client, _):
        with pytest.raises(AgentNotFound):
            await client.suggestions(AnswerRef("00000000-0000-0000-0000-000000000000", USER))


async def test_55_suggestions_disabled_is_empty() -> None:
    async with dify(live("55").response.replay()) as (client, _):
        assert await client.suggestions(AnswerRef("m", USER)) == []


async def test_suggestions_disabled_console_style_is_empty() -> None:
    payload = {"code": "app_suggested_questions_after_answer_disabled", "message": "off"}
    async with dify(json_response(403, payload)) as (client, _):
        assert await client.suggestions(AnswerRef("m", USER)) == []


async def test_suggestions_off_in_config_sends_nothing() -> None:
    async with dify(suggestions=False) as (client, recorder):
        assert await client.suggestions(AnswerRef("m", USER)) == []
    assert recorder.requests == []


async def test_suggestions_unreadable_body() -> None:
    async with dify(json_response(200, {"result": "success"})) as (client, _):
        with pytest.raises(AgentProtocolError):
            await client.suggestions(AnswerRef("m", USER))


# --- check ---------------------------------------------------------------------------------------


async def test_check_reads_app_info() -> None:
    exchange = live("02")
    async with dify(exchange.response.replay()) as (client, recorder):
        assert await client.check() == "Dify app 'Local chat app'"
    assert recorder.last.url.path == "/v1/info"
    assert recorder.last.headers["authorization"] == f"Bearer {API_KEY}"


async def test_check_falls_back_to_parameters() -> None:
    not_found = json_response(404, {"code": "not_found", "message": "The requested URL ..."})
    async with dify(not_found, live("01").response.replay()) as (client, recorder):
        assert "Dify app" in await client.check()
    assert [r.url.path for r in recorder.requests] == ["/v1/info", "/v1/parameters"]


async def test_check_bad_key() -> None:
    async with dify(live("26").response.replay()) as (client, _):
        with pytest.raises(AgentAuthError):
            await client.check()


# --- secrets -------------------------------------------------------------------------------------


def _echo_auth(request: httpx.Request) -> httpx.Response:
    """A hostile gateway that quotes the credentials back in its error message."""
    quoted = f"{request.headers['authorization']} / {request.headers['x-gateway-token']}"
    return json_response(401, {"code": "unauthorized", "message": f"Bad token {quoted}"})


def _stream_quoting_secrets(request: httpx.Request) -> httpx.Response:
    message = f"upstream said: key={API_KEY} token={HEADER_SECRET}"
    event = _event({"event": "error", "code": "completion_request_error", "message": message})
    return stream_response([event])


def _garbage_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return stream_response([f"data: {{oops {API_KEY} {HEADER_SECRET}\n\n".encode()])


@pytest.mark.parametrize(
    "answer",
    [
        _echo_auth,
        _stream_quoting_secrets,
        _garbage_quoting_secrets,
        httpx.ConnectError(f"cannot reach, key {API_KEY} {HEADER_SECRET}"),
    ],
    ids=["echoed-auth", "error-event", "garbage", "connect-error"],
)
async def test_secrets_never_reach_errors_or_logs(
    answer: Answer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Gateway-Token": HEADER_SECRET}
    async with dify(answer, headers=headers) as (client, recorder):
        events = await collect(client)
    sent = recorder.last.headers
    assert sent["authorization"] == f"Bearer {API_KEY}"  # they were really sent
    assert sent["x-gateway-token"] == HEADER_SECRET
    assert_redacted(logged_texts(failure(events), caplog.records), API_KEY, HEADER_SECRET)


async def test_secrets_never_reach_errors_of_other_calls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with dify(_echo_auth, headers={"X-Gateway-Token": HEADER_SECRET}) as (client, _):
        with pytest.raises(AgentAuthError) as caught:
            await client.feedback(AnswerRef("m", USER), Rating.LIKE)
    texts = [str(caught.value), *(r.getMessage() for r in caplog.records)]
    assert all(API_KEY not in t and HEADER_SECRET not in t for t in texts)


# --- reasoning splitter --------------------------------------------------------------------------

DETAILS_ANSWER = (
    '<details style="color:gray;background-color: #f8f8f8;padding: 8px;border-radius: 4px;" '
    f"open> <summary> Thinking... </summary>{REASONING}</details>Echo: hi"
)


def _split(splitter: ThinkingSplitter, pieces: Sequence[str]) -> tuple[str, str]:
    events = [e for piece in pieces for e in splitter.feed(piece)] + splitter.flush()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, text


@pytest.mark.parametrize("size", range(1, 40))
def test_reasoning_split_at_every_offset(size: int) -> None:
    pieces = [DETAILS_ANSWER[i : i + size] for i in range(0, len(DETAILS_ANSWER), size)]
    assert _split(ThinkingSplitter(), pieces) == (REASONING, "Echo: hi")


def test_reasoning_split_at_every_single_point() -> None:
    for cut in range(1, len(DETAILS_ANSWER)):
        pieces = [DETAILS_ANSWER[:cut], DETAILS_ANSWER[cut:]]
        assert _split(ThinkingSplitter(), pieces) == (REASONING, "Echo: hi"), cut


def test_think_tags() -> None:
    answer = "<think>\nhmm, well\n</think>\n\nThe answer."
    for size in (1, 3, 100):
        pieces = [answer[i : i + size] for i in range(0, len(answer), size)]
        assert _split(ThinkingSplitter(), pieces) == ("\nhmm, well\n", "The answer.")


def test_ordinary_text_is_not_held_back() -> None:
    splitter = ThinkingSplitter()
    assert splitter.feed("Hello") == [TextDelta("Hello")]
    assert splitter.feed(" <details>") == [TextDelta(" <details>")]
    other = ThinkingSplitter()
    assert other.feed("<") == []  # may still become "<details"
    assert other.feed("b>bold") == [TextDelta("<b>bold")]


def test_a_details_block_that_is_not_reasoning_stays_text() -> None:
    answer = "<details><summary>FAQ</summary>Answer</details> more"
    assert _split(ThinkingSplitter(), [answer[:12], answer[12:]]) == ("", answer)


def test_held_prefix_is_released_at_the_end() -> None:
    assert _split(ThinkingSplitter(), ["<det"]) == ("", "<det")


def test_unclosed_reasoning_stays_reasoning() -> None:
    opening_end = DETAILS_ANSWER.index(REASONING)
    cut = opening_end + 20
    assert _split(ThinkingSplitter(), [DETAILS_ANSWER[:cut]]) == (REASONING[:20], "")


def test_overlong_opening_is_text() -> None:
    answer = "<details " + "x" * 600 + ">"
    assert _split(ThinkingSplitter(), [answer]) == ("", answer)


def test_replace_drops_the_reasoning_block() -> None:
    assert ThinkingSplitter().replace(DETAILS_ANSWER) == "Echo: hi"
    assert ThinkingSplitter().replace("plain") == "plain"


# --- citations -----------------------------------------------------------------------------------


def test_sources_ordered_deduplicated_with_urls() -> None:
    resources = [
        {"position": 3, "dataset_name": "KB", "document_id": "d3", "document_name": "c.md"},
        {"position": 1, "dataset_name": "KB", "document_id": "d1", "document_name": "a.md"},
        {"position": 2, "dataset_name": "KB", "document_id": "d1", "document_name": "a.md"},
        {
            "position": 4,
            "dataset_name": "Web",
            "document_id": "d4",
            "document_name": "",
            "url": "https://example.com/page",
        },
        {"position": 5, "document_id": "d5", "document_name": "x", "source_url": "javascript:1"},
        {
            "position": 6,
            "document_id": "d6",
            "document_name": "y",
            "doc_metadata": {"url": "https://example.com/y"},
        },
        {"position": 7, "score": 0.1},
        "not a dict",
    ]
    assert sources_from_resources(resources) == (
        Source("a.md"),
        Source("c.md"),
        Source("Web", "https://example.com/page"),
        Source("x"),
        Source("y", "https://example.com/y"),
    )
    assert sources_from_resources(None) == ()


# --- against FakeDify ----------------------------------------------------------------------------


def fake_client(fake: FakeDify, **overrides: Any) -> AbstractAsyncContextManager[DifyClient]:
    config = make_config(**{"api_key": fake.app.api_key, **overrides})
    return connected(DifyClient, config, fake.transport())


@pytest.mark.parametrize(("stopper", "stops"), [(USER, True), ("someone-else", False)])
async def test_fake_dify_stop_only_for_the_streams_own_user(stopper: str, stops: bool) -> None:
    chunks = [f"c{i:02d} " for i in range(20)]
    fake = FakeDify(FakeApp(default_script=Script(chunks=chunks, delay=0.005)))
    async with fake_client(fake) as client:
        # Dify answers the stop with success either way.
        events = await stop_after_three_texts(client, AgentRequest("long please", USER), stopper)
    answer = check_contract(events)
    assert answer.finished is not None  # an ordinary message_end in both cases
    assert fake.calls_to("POST", "/stop")[0].json == {"user": stopper}
    if stops:
        # The three chunks, plus the one Dify lets through after the stop.
        assert answer.text == "".join(chunks[:4])
    else:
        assert answer.text == "".join(chunks)
    assert answer.message_id is not None
    assert fake.messages[answer.message_id].answer == answer.text


async def test_fake_dify_conversations_feedback_and_suggestions() -> None:
    resources = [{"position": 1, "document_id": "d", "document_name": "doc.md"}]
    fake = FakeDify(FakeApp(default_script=Script(retriever_resources=resources)))
    async with fake_client(fake) as client:
        first = check_contract(await collect(client, AgentRequest("hello there", USER)))
        assert first.text == "Echo: hello there"
        assert first.sources == (Source("doc.md"),)
        conversation = first.conversation
        second = check_contract(
            await collect(client, AgentRequest("again", USER, conversation=conversation))
        )
        assert second.conversation == conversation
        foreign = await collect(client, AgentRequest("hi", "tg-other", conversation=conversation))
        assert type(failure(foreign)) is ConversationNotFound

        assert second.message_id is not None
        ref = AnswerRef(second.message_id, USER, conversation)
        await client.feedback(ref, Rating.LIKE)
        assert fake.ratings()[second.message_id] == "like"
        await client.feedback(ref, None)
        assert fake.ratings()[second.message_id] is None
        with pytest.raises(AgentNotFound):
            await client.feedback(AnswerRef(second.message_id, "tg-other"), Rating.LIKE)
        assert await client.suggestions(ref) == list(fake.app.suggested or [])
        fake.app.suggested = None
        assert await client.suggestions(ref) == []
        assert await client.check() == "Dify app 'Fake chat app'"
    call = fake.calls[0]
    assert call.headers["authorization"] == "<present>"
    assert call.json["conversation_id"] == ""


@pytest.mark.parametrize(
    ("script", "expected", "text"),
    [
        (Script(chunks=["a", "b", "c"], error_after=2), AgentUpstreamError, "ab"),
        (Script(chunks=["a", "b", "c"], cut_after=1), AgentStreamCut, "a"),
        (
            Script(http_status=400, http_body={"code": "app_unavailable", "message": "x"}),
            AgentBadRequest,
            "",
        ),
    ],
)
async def test_fake_dify_failures(script: Script, expected: type, text: str) -> None:
    fake = FakeDify(FakeApp(default_script=script))
    async with fake_client(fake) as client:
        events = await collect(client)
    assert check_contract(events).text == text
    assert type(failure(events)) is expected


async def test_fake_dify_bad_key_and_fail_next() -> None:
    fake = FakeDify()
    async with fake_client(fake, api_key="app-wrong") as client:
        assert type(failure(await collect(client))) is AgentAuthError
    fake.fail_next(503, "Service Unavailable")
    async with fake_client(fake) as client:
        assert type(failure(await collect(client))) is AgentUnavailable
        assert check_contract(await collect(client)).text == "Echo: hi"


async def test_fake_dify_agent_chat_mode() -> None:
    fake = FakeDify(FakeApp(mode="agent-chat"))
    async with fake_client(fake) as client:
        assert check_contract(await collect(client, AgentRequest("what now", USER))).text == (
            "Echo: what now"
        )


# --- over real HTTP (FakeDify served by aiohttp) -------------------------------------------------


async def test_over_real_http() -> None:
    fake = FakeDify(FakeApp(default_script=Script(chunks=["Привет", ", ", "мир 😀"], delay=0.01)))
    async with served(fake) as base_url, agent_http_client() as http:
        client = DifyClient(make_config(base_url=base_url, api_key=fake.app.api_key), http)
        answer = check_contract(await collect(client))
        assert answer.text == "Привет, мир 😀"
        assert answer.message_id is not None
        await client.feedback(AnswerRef(answer.message_id, USER), Rating.DISLIKE)
    assert fake.ratings()[answer.message_id] == "dislike"


async def test_over_real_http_silence_before_headers_times_out() -> None:
    # Dify sends headers only with the first event: the silence timeout covers that wait.
    fake = FakeDify(FakeApp(default_script=Script(first_delay=1.0)))
    async with served(fake) as base_url, agent_http_client() as http:
        config = make_config(base_url=base_url, api_key=fake.app.api_key, silence_timeout=0.1)
        events = await collect(DifyClient(config, http))
    assert type(only_failure(events)) is AgentTimeout
