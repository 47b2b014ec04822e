"""Conformance suite for the Chaindesk adapter (`/agents/{id}/query`, SPEC.md §B).

Every request goes through a real `httpx.AsyncClient` over `httpx.MockTransport`: the
hand-written transcripts (`chaindesk-*`) replayed as written and re-split at arbitrary byte
offsets, a `Recorder` for exact request bodies, and `FakeChaindesk` where the test needs a
server with state (conversations, the `/agents` rewrite, ratings, quotas, private agents).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
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
    AnswerAccumulator,
    AnswerRef,
    Finished,
    FinishReason,
    Rating,
    ReasoningDelta,
    Source,
    Sources,
    Started,
    SupportsBranching,
    SupportsFeedback,
    SupportsStop,
    SupportsSuggestions,
    TextDelta,
    TextReplace,
    Usage,
)
from bot.agents.chaindesk import (
    OPTIONAL_FIELDS,
    ChaindeskClient,
    decode_payload,
    error_message,
    map_error,
    sources_from_response,
)
from bot.config import ChaindeskAgentConfig
from tests.agents import conformance
from tests.agents.conformance import (
    answer_of,
    assert_redacted,
    check_ending,
    connected,
    failure,
    logged_texts,
    only_failure,
    recorded,
)
from tests.fakes.chaindesk import (
    DEFAULT_AGENT_ID,
    DEFAULT_API_KEY,
    DEFAULT_DATASTORE,
    NEXT_404_PAGE,
    FakeAgent,
    FakeChaindesk,
    Script,
    api_error,
    encode_uri_component,
    js_json,
    next_404,
    sse,
)
from tests.transcripts import (
    Answer,
    ChunkStream,
    Recorder,
    body,
    catalogue,
    json_response,
    resplit,
    stream_response,
)

API_KEY = "cd-SECRET-key-0001"
HEADER_SECRET = "hdr-SECRET-value-0002"
BASE_URL = "https://chaindesk.example"
AGENT_ID = "clq8zzagent01l708wxyz0001"
USER = "tg-42"
SPLITS = [None, 1, 3, 7, 64]  # as written, and re-split across events and percent-escapes
SSE_HEADERS = (("Content-Type", "text/event-stream"),)

REWRITE_PATH = f"/agents/{AGENT_ID}/query"
API_PATH = f"/api/agents/{AGENT_ID}/query"

# What chaindesk-stream.txt's endpoint_response holds (tests/data/transcripts/README.md).
MESSAGE_ID = "clq9k3m0x0003l708abcd1234"
CONVERSATION_ID = "clq9k3m0x0001l708abcd1234"
STREAM_TEXT = "Hello! Our Pro plan costs $29/month.\n\n- Unlimited agents"
PRICING = Source("Pricing page", "https://example.com/pricing")


def make_config(**overrides: Any) -> ChaindeskAgentConfig:
    values: dict[str, Any] = {
        "platform": "chaindesk",
        "name": "docs",
        "title": "Docs",
        "base_url": BASE_URL,
        "agent_id": AGENT_ID,
    }
    values.update(overrides)
    return ChaindeskAgentConfig.model_validate(values)


def chaindesk(
    *answers: Answer, **overrides: Any
) -> AbstractAsyncContextManager[tuple[ChaindeskClient, Recorder]]:
    return recorded(ChaindeskClient, make_config(**overrides), *answers)


def served(fake: FakeChaindesk, **overrides: Any) -> AbstractAsyncContextManager[ChaindeskClient]:
    config = make_config(**{"agent_id": fake.agent.id, **overrides})
    return connected(ChaindeskClient, config, fake.transport())


def sse_body(
    data: bytes, split: int | None = None, *, status: int = 200, delay: float = 0.0
) -> httpx.Response:
    return stream_response(resplit([data], split), status=status, headers=SSE_HEADERS, delay=delay)


def bare_body(status: int, data: bytes) -> httpx.Response:
    """A body with no Content-Type, as Chaindesk's errors before the stream come (SPEC B.5)."""
    return stream_response([data], status=status, headers=())


# The questions in this suite come from "tg-42" unless a test says otherwise.
collect = partial(conformance.collect, user=USER)


def check_contract(events: Sequence[AgentEvent]) -> AnswerAccumulator:
    """The stream contract of bot/agents/base.py as it applies to Chaindesk, then the answer.

    Chaindesk tells ids only in endpoint_response, after the text, so Started may follow
    text; once it came, no more text deltas may follow, and Finished repeats its ids.
    """
    terminal, started = check_ending(events)
    if started:
        assert not [e for e in events[started[0] :] if isinstance(e, TextDelta)]
        start = events[started[0]]
        assert isinstance(start, Started)
        if isinstance(terminal, Finished):
            assert (start.message_id, start.conversation) == (
                terminal.message_id,
                terminal.conversation,
            )
    assert not [e for e in events if isinstance(e, ReasoningDelta)]
    assert all(e.text for e in events if isinstance(e, TextDelta))
    return answer_of(events)


def endpoint_response(obj: dict[str, Any]) -> bytes:
    return sse(js_json(obj), "endpoint_response")


def final_object(answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "messageId": MESSAGE_ID,
        "answer": answer,
        "sources": [],
        "conversationId": CONVERSATION_ID,
        "visitorId": USER,
        **extra,
    }


DONE = b"event: \ndata: [DONE]\n\n"


# --- the client and its capabilities -------------------------------------------------------------


async def test_client_shape() -> None:
    async with chaindesk() as (client, _):
        assert isinstance(client, AgentClient)
        assert isinstance(client, SupportsFeedback)
        # No stop endpoint (closing the stream stops), no suggestions, no branching.
        assert not isinstance(client, SupportsStop)
        assert not isinstance(client, SupportsSuggestions)
        assert not isinstance(client, SupportsBranching)
        assert (client.name, client.title, client.platform) == ("docs", "Docs", "chaindesk")
        assert client.feedback_clearable is False


# --- the transcripts -----------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_stream_transcript(split: int | None) -> None:
    async with chaindesk(sse_body(body("chaindesk-stream.txt"), split)) as (client, recorder):
        events = await collect(client)
    assert events == [
        TextDelta("Hello"),
        TextDelta("! Our"),
        TextDelta(" Pro plan"),
        TextDelta(" costs $29/month."),
        TextDelta("\n\n- Unlimited"),
        TextDelta(" agents"),
        Started(message_id=MESSAGE_ID, conversation=CONVERSATION_ID),
        Sources((PRICING,)),
        Finished(message_id=MESSAGE_ID, conversation=CONVERSATION_ID),
    ]
    answer = check_contract(events)
    assert answer.text == STREAM_TEXT
    assert len(recorder.requests) == 1
    assert recorder.last.method == "POST"
    assert str(recorder.last.url) == f"{BASE_URL}{REWRITE_PATH}"


CYRILLIC = ["Привет", ", мир", "! Как ", "дела? 👋", "\n«ёлка» — 100%"]


@pytest.mark.parametrize("split", [None, 1, 2, 5, 13])
async def test_cyrillic_arrives_percent_encoded_and_exact(split: int | None) -> None:
    text = "".join(CYRILLIC)
    wire = b"".join(sse(c, "answer") for c in ["", *CYRILLIC, ""])
    wire += endpoint_response(final_object(text)) + DONE
    assert wire.isascii()  # every non-ASCII byte travels as a percent-escape
    async with chaindesk(sse_body(wire, split)) as (client, _):
        events = await collect(client)
    answer = check_contract(events)
    assert [e.text for e in events if isinstance(e, TextDelta)] == CYRILLIC
    assert answer.text == text
    assert not [e for e in events if isinstance(e, TextReplace)]


def test_decode_payload_is_decode_uri_component() -> None:
    assert decode_payload("%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82") == "Привет"
    assert decode_payload("a+b%20c%0A") == "a+b c\n"  # `+` is not a space here
    assert decode_payload("!~*'()") == "!~*'()"
    assert decode_payload("%D0") == "\ufffd"  # broken UTF-8 is one replacement, not a crash
    assert encode_uri_component("a b+c/ж") == "a%20b%2Bc%2F%D0%B6"


@pytest.mark.parametrize("split", SPLITS)
async def test_error_stream_transcript_keeps_partial_text(split: int | None) -> None:
    async with chaindesk(sse_body(body("chaindesk-error-stream.txt"), split)) as (client, _):
        events = await collect(client)
    assert events[:-1] == [TextDelta("Our Pro"), TextDelta(" plan")]
    answer = check_contract(events)
    assert answer.text == "Our Pro plan"
    error = failure(events)
    # OpenAI's rate limit, passed through by Chaindesk as an [ERROR] line.
    assert type(error) is AgentRateLimited
    assert error.detail == "429 Rate limit reached for requests"
    assert error.status is None


async def test_usage_limit_402_body_without_content_type() -> None:
    response = bare_body(402, body("chaindesk-usage-limit-402-body.txt"))
    assert "content-type" not in response.headers
    async with chaindesk(response) as (client, recorder):
        events = await collect(client)
    error = only_failure(events)
    assert type(error) is AgentQuotaExceeded
    assert (error.status, error.code) == (402, "USAGE_LIMIT")
    assert error.detail == "the agent's usage limit is reached"
    assert len(recorder.requests) == 1


ERROR_CLASSES: dict[str, type[AgentError]] = {
    "402": AgentQuotaExceeded,
    "403": AgentAuthError,
    "404": AgentNotFound,
    "429": AgentRateLimited,
    "500": AgentUnavailable,
}


def test_every_catalogued_error_has_an_expectation() -> None:
    rows = {k for k in catalogue("chaindesk-errors.json") if not k.startswith("_")}
    assert rows == set(ERROR_CLASSES)


@pytest.mark.parametrize("shape", ["json", "streaming"])
@pytest.mark.parametrize("row", sorted(ERROR_CLASSES))
async def test_catalogued_errors(row: str, shape: str) -> None:
    message = catalogue("chaindesk-errors.json")[row]["error"]
    status = int(row)
    if shape == "json":
        response = json_response(status, {"error": message})
    else:
        response = bare_body(status, f"data: [ERROR]{message}\n\n".encode())
    async with chaindesk(response) as (client, recorder):
        events = await collect(client)
    error = only_failure(events)
    assert type(error) is ERROR_CLASSES[row]
    assert error.status == status
    if status < 500:
        assert error.code == message
    else:
        assert error.detail == message
    assert len(recorder.requests) == 1  # a Chaindesk 404 is an answer, not a missing route


def test_query_response_transcript_is_what_endpoint_response_holds() -> None:
    """The streamed endpoint_response is the non-streaming answer minus `usage` (SPEC B.3/B.4)."""
    stored = catalogue("chaindesk-query-response.json")
    events = body("chaindesk-stream.txt").decode().split("\n\n")
    line = next(e for e in events if e.startswith("event: endpoint_response\n"))
    final = json.loads(decode_payload(line.split("data: ", 1)[1]))
    assert set(final) == {"messageId", "answer", "sources", "conversationId", "visitorId"}
    assert {k: stored[k] for k in final} == final
    assert set(stored) - set(final) == {"usage"}


@pytest.mark.parametrize("shape", ["endpoint_response", "json_answer"])
async def test_query_response_fields_become_events(shape: str) -> None:
    stored = catalogue("chaindesk-query-response.json")
    if shape == "endpoint_response":
        response = sse_body(endpoint_response(stored) + DONE)
    else:  # a whole JSON answer where a stream was asked for (an older revision or a proxy)
        response = json_response(200, stored)
    async with chaindesk(response) as (client, _):
        events = await collect(client)
    assert events == [
        Started(message_id=MESSAGE_ID, conversation=CONVERSATION_ID),
        TextReplace(stored["answer"]),  # nothing was streamed: the final answer is the text
        Sources((PRICING,)),
        Finished(
            message_id=MESSAGE_ID,
            conversation=CONVERSATION_ID,
            finish_reason=FinishReason.STOP,
            usage=Usage(prompt_tokens=903, completion_tokens=17, total_tokens=920),
        ),
    ]
    assert check_contract(events).text == stored["answer"]


# --- the request -------------------------------------------------------------------------------


async def test_request_body_minimal_and_headers() -> None:
    async with chaindesk(sse_body(body("chaindesk-stream.txt"))) as (client, recorder):
        await collect(client, AgentRequest("Сколько стоит Pro?", USER))
    assert recorder.json() == {"query": "Сколько стоит Pro?", "streaming": True, "visitorId": USER}
    sent = recorder.last.headers
    assert "authorization" not in sent  # public agents need no key
    assert sent["content-type"] == "application/json"
    assert sent["accept"] == "text/event-stream"


async def test_optional_fields_are_sent_exactly_as_configured() -> None:
    options: dict[str, Any] = {
        "temperature": 0,  # sent although the server reads `temperature || agent.temperature`
        "modelName": "gpt_4_turbo",
        "maxTokens": 512,
        "topP": 0.9,
        "presencePenalty": -0.5,
        "frequencyPenalty": 1.5,
        "filters": {"datastore_ids": ["ds1"], "custom_ids": ["a", "b"]},
        "systemPrompt": "Be brief.",
        "userPrompt": "{query}",
        "promptType": "raw",
        "promptTemplate": "Answer: {query}",
    }
    assert set(options) == set(OPTIONAL_FIELDS)
    request = AgentRequest("q", USER, conversation="clconv")
    async with chaindesk(sse_body(body("chaindesk-stream.txt")), **options) as (client, rec):
        await collect(client, request)
    sent = rec.json()
    assert sent == {
        "query": "q",
        "streaming": True,
        "conversationId": "clconv",
        "visitorId": USER,
        **options,
    }
    assert sent["temperature"] == 0


async def test_unset_optional_fields_are_absent() -> None:
    async with chaindesk(sse_body(body("chaindesk-stream.txt")), maxTokens=100) as (client, rec):
        await collect(client)
    assert set(rec.json()) == {"query", "streaming", "visitorId", "maxTokens"}


async def test_api_key_and_extra_headers_are_sent() -> None:
    headers = {"X-Gateway": HEADER_SECRET}
    async with chaindesk(
        sse_body(body("chaindesk-stream.txt")), api_key=API_KEY, headers=headers
    ) as (client, recorder):
        await collect(client)
    assert recorder.last.headers["authorization"] == f"Bearer {API_KEY}"
    assert recorder.last.headers["x-gateway"] == HEADER_SECRET


async def test_parent_message_and_history_are_not_sent() -> None:
    # The server keeps the history; Chaindesk has no branching.
    request = AgentRequest("q", USER, conversation="c1", parent_message_id="m0")
    async with chaindesk(sse_body(body("chaindesk-stream.txt"))) as (client, recorder):
        await collect(client, request)
    assert set(recorder.json()) == {"query", "streaming", "conversationId", "visitorId"}


# --- conversations on a server with state --------------------------------------------------------


async def test_conversation_is_carried_and_history_kept_server_side() -> None:
    fake = FakeChaindesk()
    async with served(fake) as client:
        first = check_contract(await collect(client, AgentRequest("hello there", USER)))
        assert first.text == "Echo: hello there"
        conversation = first.conversation
        assert conversation is not None
        assert conversation == fake.queries[0].conversation_id
        assert fake.queries[0].sent_conversation_id is None  # omitted when new
        assert "conversationId" not in fake.calls[0].json

        second = check_contract(await collect(client, AgentRequest("again", USER, conversation)))
    assert second.conversation == conversation
    assert fake.queries[1].sent_conversation_id == conversation
    assert fake.queries[1].history == 2  # the first question and answer
    assert fake.history(conversation) == [
        ("human", "hello there"),
        ("agent", "Echo: hello there"),
        ("human", "again"),
        ("agent", "Echo: again"),
    ]
    assert first.message_id != second.message_id
    assert second.message_id == fake.queries[1].message_id


async def test_visitor_id_is_stable_per_user() -> None:
    fake = FakeChaindesk()
    async with served(fake) as client:
        one = check_contract(await collect(client, AgentRequest("a", "tg-1")))
        await collect(client, AgentRequest("b", "tg-1", one.conversation))
        await collect(client, AgentRequest("c", "tg-2"))
        await collect(client, AgentRequest("d", "tg-chat-77"))
    assert [q.sent_visitor_id for q in fake.queries] == ["tg-1", "tg-1", "tg-2", "tg-chat-77"]
    assert fake.conversations[one.conversation or ""].visitor_id == "tg-1"
    assert len({q.conversation_id for q in fake.queries}) == 3


# --- the /agents rewrite and the /api fallback ---------------------------------------------------


async def test_rewrite_host_uses_the_documented_path() -> None:
    fake = FakeChaindesk(rewrite=True)
    async with served(fake) as client:
        check_contract(await collect(client))
        check_contract(await collect(client))
    assert [c.path for c in fake.calls] == [f"/agents/{DEFAULT_AGENT_ID}/query"] * 2


async def test_rewriteless_host_falls_back_to_api_once_and_remembers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relaygram.agents.chaindesk")
    fake = FakeChaindesk(rewrite=False)
    async with served(fake) as client:
        first = check_contract(await collect(client, AgentRequest("one", USER)))
        second = check_contract(await collect(client, AgentRequest("two", USER)))
    assert (first.text, second.text) == ("Echo: one", "Echo: two")
    rewritten, api = f"/agents/{DEFAULT_AGENT_ID}/query", f"/api/agents/{DEFAULT_AGENT_ID}/query"
    assert [c.path for c in fake.calls] == [rewritten, api, api]
    # The retry sends the same body; only one query reached the agent each time.
    assert fake.calls[0].json == fake.calls[1].json
    assert [q.path for q in fake.queries] == [api, api]
    assert any("does not exist on this host" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "missing",
    [
        pytest.param(next_404, id="nextjs-html-404"),
        pytest.param(lambda: httpx.Response(404), id="empty-404"),
        pytest.param(lambda: httpx.Response(404, text="404 page not found"), id="proxy-text-404"),
        pytest.param(lambda: httpx.Response(405, text="Method Not Allowed"), id="405"),
        pytest.param(lambda: httpx.Response(200, html=NEXT_404_PAGE), id="html-page-with-200"),
    ],
)
async def test_what_counts_as_a_missing_route(missing: Callable[[], httpx.Response]) -> None:
    async with chaindesk(missing(), sse_body(body("chaindesk-stream.txt"))) as (client, rec):
        answer = check_contract(await collect(client))
    assert answer.text == STREAM_TEXT
    assert [r.url.path for r in rec.requests] == [REWRITE_PATH, API_PATH]


async def test_chaindesk_not_found_does_not_trigger_the_fallback() -> None:
    # Only one answer is queued: a second request would fail the test.
    async with chaindesk(bare_body(404, b"data: [ERROR]NOT_FOUND\n\n")) as (client, recorder):
        events = await collect(client)
    error = failure(events)
    assert type(error) is AgentNotFound
    assert (error.status, error.code) == (404, "NOT_FOUND")
    assert len(recorder.requests) == 1


async def test_unknown_agent_on_a_rewriteless_host_is_not_found() -> None:
    fake = FakeChaindesk(rewrite=False)
    async with served(fake, agent_id="clnope") as client:
        error = failure(await collect(client))
    assert type(error) is AgentNotFound
    assert error.code == "NOT_FOUND"
    assert [c.path for c in fake.calls] == ["/agents/clnope/query", "/api/agents/clnope/query"]


async def test_no_route_at_all_is_not_found_and_not_remembered() -> None:
    recorder_answers = [next_404(), next_404(), next_404(), next_404()]
    async with chaindesk(*recorder_answers) as (client, recorder):
        first = failure(await collect(client))
        second = failure(await collect(client))
    for error in (first, second):
        assert type(error) is AgentNotFound
        assert REWRITE_PATH in error.detail
        assert API_PATH in error.detail
    assert [r.url.path for r in recorder.requests] == [REWRITE_PATH, API_PATH] * 2


async def test_a_learned_path_that_disappears_is_probed_again() -> None:
    stream = body("chaindesk-stream.txt")
    async with chaindesk(next_404(), sse_body(stream), next_404(), sse_body(stream)) as (
        client,
        recorder,
    ):
        check_contract(await collect(client))
        check_contract(await collect(client))
    assert [r.url.path for r in recorder.requests] == [
        REWRITE_PATH,
        API_PATH,
        API_PATH,
        REWRITE_PATH,
    ]


async def test_base_url_ending_in_api_needs_no_fallback() -> None:
    async with chaindesk(
        sse_body(body("chaindesk-stream.txt")),
        json_response(200, {"id": MESSAGE_ID, "eval": "good"}),
        base_url=f"{BASE_URL}/api/",
    ) as (client, recorder):
        check_contract(await collect(client))
        await client.feedback(AnswerRef(MESSAGE_ID, USER), Rating.LIKE)
    assert [str(r.url) for r in recorder.requests] == [
        f"{BASE_URL}{API_PATH}",
        f"{BASE_URL}/api/conversations/eval-answer",
    ]


async def test_server_errors_do_not_trigger_the_fallback() -> None:
    page = httpx.Response(502, html="<html><body>Bad gateway</body></html>")
    async with chaindesk(page) as (client, recorder):
        error = failure(await collect(client))
    assert type(error) is AgentUnavailable
    assert error.detail == "HTTP 502 with an HTML page, not a Chaindesk answer"
    assert len(recorder.requests) == 1


# --- the final answer wins -----------------------------------------------------------------------


async def test_server_retry_repeating_text_is_replaced_by_endpoint_response() -> None:
    fake = FakeChaindesk(
        FakeAgent(default_script=Script(chunks=["Hello", " world"], repeat_after=1))
    )
    async with served(fake) as client:
        events = await collect(client)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == "HelloHello world"
    replaces = [e for e in events if isinstance(e, TextReplace)]
    assert replaces == [TextReplace("Hello world")]
    answer = check_contract(events)
    assert answer.text == "Hello world"
    assert answer.message_id == fake.queries[0].message_id


async def test_no_replace_when_only_the_server_side_trim_differs() -> None:
    fake = FakeChaindesk(FakeAgent(default_script=Script(chunks=["\n\nHello", " world "])))
    async with served(fake) as client:
        events = await collect(client)
    assert not [e for e in events if isinstance(e, TextReplace)]
    assert check_contract(events).text == "\n\nHello world "


async def test_empty_final_answer_never_wipes_streamed_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 2024: an empty answer with approvals means "a tool call waits for approval".
    final = final_object("", approvals=[{"tool": {"id": "t1"}, "payload": {}}])
    wire = sse("Let me check", "answer") + endpoint_response(final) + DONE
    async with chaindesk(sse_body(wire)) as (client, _):
        events = await collect(client)
    assert not [e for e in events if isinstance(e, TextReplace)]
    assert check_contract(events).text == "Let me check"
    assert any("tool approval" in r.getMessage() for r in caplog.records)


async def test_sources_event_before_finished() -> None:
    sources: list[dict[str, Any]] = [
        {"datasource_id": "d1", "datasource_name": "Pricing page", "source_url": PRICING.url},
        {"datasource_id": "d2", "datasource_name": "Handbook.pdf", "source_url": "s3://b/h.pdf"},
    ]
    fake = FakeChaindesk(FakeAgent(default_script=Script(sources=sources)))
    async with served(fake) as client:
        events = await collect(client)
    assert isinstance(events[-2], Sources)
    assert events[-2].items == (PRICING, Source("Handbook.pdf", None))
    assert check_contract(events).sources == events[-2].items


def test_sources_deduplicated_titled_and_linked() -> None:
    raw: list[Any] = [
        {"datasource_id": "d1", "datasource_name": " Pricing page ", "source_url": PRICING.url},
        {"datasource_id": "d1", "datasource_name": "Pricing page (chunk 2)"},
        {"datasource_id": "d3", "source_url": "https://example.com/faq"},
        {"datasource_id": "d4", "datasource_name": "", "source_url": "ftp://x"},
        {"datasource_name": "Notes", "source_url": "javascript:alert(1)"},
        {"datasource_name": "Notes"},
        "not an object",
    ]
    assert sources_from_response(raw) == (
        PRICING,
        Source("https://example.com/faq", "https://example.com/faq"),
        Source("Notes", None),
    )
    assert sources_from_response(None) == ()
    assert sources_from_response({"a": 1}) == ()


# --- how streams end -----------------------------------------------------------------------------


async def test_end_after_endpoint_response_without_done_is_finished() -> None:
    fake = FakeChaindesk(FakeAgent(default_script=Script(no_done=True)))
    async with served(fake) as client:
        events = await collect(client, AgentRequest("hi you", USER))
    answer = check_contract(events)
    assert isinstance(events[-1], Finished)
    assert answer.text == "Echo: hi you"
    assert answer.conversation == fake.queries[0].conversation_id


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"data: [ERROR]late failure\n\n", id="error-line"),
        pytest.param(b"event: answer\ndata: more%20text\n\n", id="text-after-final"),
    ],
)
async def test_nothing_after_endpoint_response_undoes_the_answer(tail: bytes) -> None:
    wire = sse("Hi", "answer") + endpoint_response(final_object("Hi")) + tail + DONE
    async with chaindesk(sse_body(wire)) as (client, _):
        events = await collect(client)
    answer = check_contract(events)
    assert isinstance(events[-1], Finished)
    assert answer.text == "Hi"


async def test_silence_after_endpoint_response_still_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunks = [sse("Hi", "answer"), endpoint_response(final_object("Hi")), DONE]
    stream = ChunkStream(chunks, delays=[0, 0, 5.0])
    response = httpx.Response(200, headers=dict(SSE_HEADERS), stream=stream)
    async with chaindesk(response, silence_timeout=0.05) as (client, _):
        events = await asyncio.wait_for(collect(client), timeout=2)
    assert isinstance(events[-1], Finished)
    assert events[-1].message_id == MESSAGE_ID
    assert not any("query failed" in r.getMessage() for r in caplog.records)


async def test_done_without_endpoint_response_finishes_without_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = sse("Hi", "answer") + DONE
    async with chaindesk(sse_body(wire)) as (client, _):
        events = await collect(client, AgentRequest("q", USER, conversation="clold"))
    assert events == [TextDelta("Hi"), Finished(message_id=None, conversation="clold")]
    assert any("no endpoint_response" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("split", [None, 5])
async def test_cut_stream_keeps_partial_text(split: int | None) -> None:
    fake = FakeChaindesk(FakeAgent(default_script=Script(cut_after=2)))
    async with served(fake) as client:
        events = await collect(client, AgentRequest("one two three four", USER))
    answer = check_contract(events)
    assert answer.text == "Echo: one "
    assert type(failure(events)) is AgentStreamCut
    assert answer.started is None
    assert fake.queries[0].message_id is None  # nothing was stored


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("USAGE_LIMIT", AgentQuotaExceeded),
        ("UNAUTHORIZED", AgentAuthError),
        ("RATE_LIMIT", AgentRateLimited),
        ("429 Rate limit reached for requests", AgentRateLimited),
        ("429 You exceeded your current quota, please check your plan", AgentQuotaExceeded),
        ("Request failed with status code 500", AgentUpstreamError),
        ("", AgentUpstreamError),
    ],
)
async def test_mid_stream_error_lines(
    message: str, expected: type[AgentError], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(chunks=["Part", "ial", " more"], error_after=2, error_message=message)
    fake = FakeChaindesk(FakeAgent(default_script=script))
    async with served(fake) as client:
        events = await collect(client)
    answer = check_contract(events)
    assert answer.text == "Partial"
    error = failure(events)
    assert type(error) is expected
    assert error.status is None
    assert fake.queries[0].outcome == "error"
    assert any("stream failed" in r.getMessage() for r in caplog.records)


async def test_2024_events_are_not_answer_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="relaygram.agents.chaindesk")
    wire = (
        sse("Searching the web for «цены»", "step")
        + sse(js_json({"name": "search", "args": {"q": "x"}}), "tool_call")
        + sse(js_json({"currentField": "email", "isValid": False}), "metadata")
        + sse("Done", "answer")
        + sse("whatever", "some_future_event")
        + b"data: unnamed%20payload\n\n"
        + endpoint_response(final_object("Done"))
        + DONE
    )
    async with chaindesk(sse_body(wire)) as (client, _):
        events = await collect(client)
    assert check_contract(events).text == "Done"
    assert not [e for e in events if isinstance(e, TextReplace)]
    assert any("Searching the web for «цены»" in r.getMessage() for r in caplog.records)


async def test_steps_from_the_fake_are_ignored() -> None:
    fake = FakeChaindesk(FakeAgent(default_script=Script(steps=["Thinking", "Searching"])))
    async with served(fake) as client:
        assert check_contract(await collect(client)).text == "Echo: hi"


async def test_unreadable_endpoint_response_is_a_protocol_error_after_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = sse("Partial", "answer") + sse("{not json", "endpoint_response") + DONE
    async with chaindesk(sse_body(wire)) as (client, _):
        events = await collect(client)
    assert check_contract(events).text == "Partial"
    assert type(failure(events)) is AgentProtocolError
    assert any("unreadable endpoint_response" in r.getMessage() for r in caplog.records)


async def test_a_plain_200_that_is_no_stream_is_a_protocol_error() -> None:
    async with chaindesk(httpx.Response(200, text="OK")) as (client, recorder):
        error = failure(await collect(client))
    assert type(error) is AgentProtocolError
    assert len(recorder.requests) == 1


async def test_json_200_without_an_answer_is_a_protocol_error() -> None:
    async with chaindesk(json_response(200, {"status": "ok"})) as (client, _):
        assert type(failure(await collect(client))) is AgentProtocolError


# --- time and transport --------------------------------------------------------------------------


async def test_silence_timeout_between_chunks_keeps_text() -> None:
    chunks = [e + b"\n\n" for e in body("chaindesk-stream.txt").split(b"\n\n") if e]
    stream = ChunkStream(chunks, delays=[0, 0, 5.0] + [0] * len(chunks))
    response = httpx.Response(200, headers=dict(SSE_HEADERS), stream=stream)
    async with chaindesk(response, silence_timeout=0.05) as (client, _):
        events = await asyncio.wait_for(collect(client), timeout=2)
    answer = check_contract(events)
    assert answer.text == "Hello"
    assert type(failure(events)) is AgentTimeout
    assert stream.closed


async def test_retrieval_silence_shorter_than_the_timeout_is_fine() -> None:
    # No pings exist: silence while the agent searches its datastores is normal.
    fake = FakeChaindesk(FakeAgent(default_script=Script(first_delay=0.15, delay=0.05)))
    async with served(fake, silence_timeout=0.5) as client:
        assert check_contract(await collect(client, AgentRequest("a b", USER))).text == "Echo: a b"


async def test_retrieval_silence_longer_than_the_timeout_fails() -> None:
    fake = FakeChaindesk(FakeAgent(default_script=Script(first_delay=5.0)))
    async with served(fake, silence_timeout=0.05) as client:
        events = await asyncio.wait_for(collect(client), timeout=2)
    assert type(only_failure(events)) is AgentTimeout


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), AgentUnavailable),
        (httpx.ConnectTimeout("slow"), AgentUnavailable),
        (httpx.ReadTimeout("timed out"), AgentTimeout),
    ],
)
async def test_failures_before_headers(exc: Exception, expected: type[AgentError]) -> None:
    async with chaindesk(exc) as (client, recorder):
        events = await collect(client)
    assert type(only_failure(events)) is expected
    assert len(recorder.requests) == 1  # a transport failure is no reason to try /api


async def test_connection_lost_mid_stream_is_a_cut() -> None:
    chunks = [sse("Hel", "answer"), sse("lo", "answer")]
    error = httpx.RemoteProtocolError("peer closed connection without sending complete body")
    async with chaindesk(stream_response(chunks, error=error)) as (client, _):
        events = await collect(client)
    assert check_contract(events).text == "Hello"
    assert type(failure(events)) is AgentStreamCut


async def test_closing_the_stream_is_the_stop() -> None:
    fake = FakeChaindesk(FakeAgent(default_script=Script(delay=0.01)))
    async with served(fake) as client:
        events = client.stream(AgentRequest("one two three four five", USER))
        assert await anext(events) == TextDelta("Echo: ")
        await events.aclose()
    assert fake.queries[0].outcome == "aborted"
    assert fake.queries[0].message_id is None  # Chaindesk stores nothing for an aborted answer


async def test_429_retry_after() -> None:
    response = json_response(429, {"error": "RATE_LIMIT"}, [("Retry-After", "7")])
    async with chaindesk(response) as (client, _):
        error = failure(await collect(client))
    assert isinstance(error, AgentRateLimited)
    assert (error.retry_after, error.code) == (7.0, "RATE_LIMIT")


# --- errors from the platform's own checks -------------------------------------------------------


async def test_private_agent_needs_the_key() -> None:
    fake = FakeChaindesk(FakeAgent(private=True, org_key=API_KEY))
    async with served(fake) as client:
        error = failure(await collect(client))
    assert type(error) is AgentAuthError
    assert (error.status, error.code) == (403, "UNAUTHORIZED")
    async with served(fake, api_key=API_KEY) as client:
        assert check_contract(await collect(client)).text == "Echo: hi"
    assert [c.authorized for c in fake.calls] == [False, True]


async def test_a_wrong_key_is_anonymous_for_a_public_agent() -> None:
    fake = FakeChaindesk(FakeAgent(org_key=DEFAULT_API_KEY))
    async with served(fake, api_key="not-a-key") as client:
        assert check_contract(await collect(client)).text == "Echo: hi"


async def test_foreign_datastore_filter_is_refused() -> None:
    fake = FakeChaindesk()
    async with served(fake, filters={"datastore_ids": ["clforeign"]}) as client:
        error = failure(await collect(client))
    assert type(error) is AgentAuthError
    async with served(fake, filters={"datastore_ids": [DEFAULT_DATASTORE]}) as client:
        check_contract(await collect(client))


async def test_usage_limit_from_the_fake() -> None:
    fake = FakeChaindesk(FakeAgent(query_limit=1))
    async with served(fake) as client:
        check_contract(await collect(client))
        error = failure(await collect(client))
    assert type(error) is AgentQuotaExceeded
    assert error.code == "USAGE_LIMIT"


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (402, "USAGE_LIMIT", AgentQuotaExceeded),
        (403, "UNAUTHORIZED", AgentAuthError),
        (403, "INTEGRATION_CREDENTIALS_INVALID", AgentAuthError),
        (401, "Unauthorized", AgentAuthError),
        (404, "NOT_FOUND", AgentNotFound),
        (400, "INVALID_REQUEST", AgentBadRequest),
        (400, "EMPTY_DATASOURCE", AgentBadRequest),
        (413, "Body exceeded 1mb limit", AgentBadRequest),
        (429, "RATE_LIMIT", AgentRateLimited),
        (429, "Too Many Requests", AgentRateLimited),
        (500, "Cannot read properties of undefined", AgentUnavailable),
        (501, "NOT_IMPLEMENTED", AgentUnavailable),
        (None, "USAGE_LIMIT", AgentQuotaExceeded),
        (None, "UNAUTHORIZED", AgentAuthError),
        (None, "RATE_LIMIT", AgentRateLimited),
        (None, "Too many requests, slow down", AgentRateLimited),
        (None, "insufficient_quota", AgentQuotaExceeded),
        (None, "Connection error.", AgentUpstreamError),
    ],
)
def test_map_error(status: int | None, message: str, expected: type[AgentError]) -> None:
    error = map_error(status, message)
    assert type(error) is expected
    assert error.status == status


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"data: [ERROR]USAGE_LIMIT\n\n", "USAGE_LIMIT"),
        (b"[ERROR]NOT_FOUND", "NOT_FOUND"),
        (b"data:[ERROR]\n\n", ""),
        (b'{"error": "UNAUTHORIZED"}', "UNAUTHORIZED"),
        (b'{"error": "error invalid request body", "details": []}', "error invalid request body"),
        (b'{"message": "x"}', None),
        (NEXT_404_PAGE.encode(), None),
        (b"", None),
        (b"null", None),
    ],
)
def test_error_message(raw: bytes, message: str | None) -> None:
    assert error_message(raw) == message


# --- feedback ------------------------------------------------------------------------------------


async def test_feedback_request_is_exactly_the_transcript() -> None:
    expected = catalogue("chaindesk-eval-answer-request.json")
    reply = json_response(200, {"id": expected["messageId"], "eval": "good"})
    async with chaindesk(reply, api_key=API_KEY) as (client, recorder):
        ref = AnswerRef(expected["messageId"], expected["visitorId"], CONVERSATION_ID)
        await client.feedback(ref, Rating.LIKE)
    request = recorder.last
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/api/conversations/eval-answer"
    assert recorder.json() == expected
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_feedback_dislike_is_bad() -> None:
    async with chaindesk(json_response(200, {})) as (client, recorder):
        await client.feedback(AnswerRef("m1", USER), Rating.DISLIKE)
    assert recorder.json() == {"messageId": "m1", "eval": "bad", "visitorId": USER}
    assert "authorization" not in recorder.last.headers


async def test_feedback_cannot_be_cleared_and_sends_nothing() -> None:
    async with chaindesk() as (client, recorder):
        with pytest.raises(AgentBadRequest, match="cannot clear a rating"):
            await client.feedback(AnswerRef("m1", USER), None)
    assert recorder.requests == []


async def test_feedback_is_stored_by_the_fake() -> None:
    fake = FakeChaindesk(rewrite=False)
    async with served(fake) as client:
        answer = check_contract(await collect(client))
        assert answer.message_id is not None
        ref = AnswerRef(answer.message_id, USER, answer.conversation)
        await client.feedback(ref, Rating.LIKE)
        assert fake.evals()[answer.message_id] == "good"
        await client.feedback(ref, Rating.DISLIKE)
    assert fake.evals()[answer.message_id] == "bad"
    # Feedback always goes to /api, whatever the query path.
    assert len(fake.calls_to("POST", "/api/conversations/eval-answer")) == 2


async def test_feedback_errors() -> None:
    fake = FakeChaindesk(FakeAgent(private=True, org_key=API_KEY))
    async with served(fake, api_key=API_KEY) as client:
        answer = check_contract(await collect(client))
        with pytest.raises(AgentNotFound):
            await client.feedback(AnswerRef("clunknown", USER), Rating.LIKE)
    async with served(fake) as anonymous:
        with pytest.raises(AgentAuthError):
            await anonymous.feedback(AnswerRef(answer.message_id or "", USER), Rating.LIKE)
    invalid = json_response(400, {"error": "error invalid request body", "details": []})
    async with chaindesk(invalid) as (client, _):
        with pytest.raises(AgentBadRequest, match="invalid request body"):
            await client.feedback(AnswerRef("m", USER), Rating.LIKE)


async def test_fake_rejects_an_invalid_eval_body() -> None:
    fake = FakeChaindesk()
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        reply = await http.post(
            "https://x/api/conversations/eval-answer", json={"messageId": "m", "eval": "meh"}
        )
    assert reply.status_code == 400
    assert reply.json()["error"] == "error invalid request body"


# --- check ---------------------------------------------------------------------------------------


async def test_check_names_the_agent() -> None:
    fake = FakeChaindesk()
    async with served(fake) as client:
        assert await client.check() == "Chaindesk agent 'Fake docs agent'"
    assert [(c.method, c.path) for c in fake.calls] == [("GET", f"/api/agents/{DEFAULT_AGENT_ID}")]


async def test_check_unknown_agent_is_not_found() -> None:
    # Chaindesk answers `200 null` for an unknown id.
    async with served(FakeChaindesk(), agent_id="clnope") as client:
        with pytest.raises(AgentNotFound):
            await client.check()


async def test_check_private_agent() -> None:
    fake = FakeChaindesk(FakeAgent(private=True, org_key=API_KEY, name="Secret"))
    async with served(fake) as client:
        with pytest.raises(AgentAuthError):
            await client.check()
    async with served(fake, api_key=API_KEY) as client:
        assert await client.check() == "Chaindesk agent 'Secret'"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (json_response(401, {"error": "UNAUTHORIZED"}), AgentAuthError),
        (next_404(), AgentNotFound),
        (json_response(200, ["not", "an", "agent"]), AgentProtocolError),
        (httpx.Response(503, text="upstream down"), AgentUnavailable),
    ],
)
async def test_check_failures(reply: httpx.Response, expected: type[AgentError]) -> None:
    async with chaindesk(reply) as (client, _):
        with pytest.raises(expected):
            await client.check()


async def test_check_without_a_name() -> None:
    async with chaindesk(json_response(200, {"id": AGENT_ID})) as (client, _):
        assert await client.check() == "Chaindesk agent"


# --- secrets -------------------------------------------------------------------------------------


def _echo_auth(request: httpx.Request) -> httpx.Response:
    """A hostile gateway that quotes the credentials back in its error."""
    quoted = f"{request.headers['authorization']} / {request.headers['x-gateway-token']}"
    return json_response(403, {"error": f"Bad token {quoted}"})


def _error_line_quoting_secrets(request: httpx.Request) -> httpx.Response:
    line = f"data: [ERROR]upstream said key={API_KEY} token={HEADER_SECRET}\n\n".encode()
    return stream_response([sse("Hi", "answer"), line])


def _bare_402_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return bare_body(402, f"data: [ERROR]no {API_KEY} {HEADER_SECRET}\n\n".encode())


def _bad_final_quoting_secrets(request: httpx.Request) -> httpx.Response:
    return stream_response([sse(f"{{oops {API_KEY} {HEADER_SECRET}", "endpoint_response")])


def _step_quoting_secrets(request: httpx.Request) -> httpx.Response:
    wire = sse(f"using {API_KEY} {HEADER_SECRET}", "step") + b"data: [ERROR]boom\n\n"
    return stream_response([wire])


@pytest.mark.parametrize(
    "answer",
    [
        _echo_auth,
        _error_line_quoting_secrets,
        _bare_402_quoting_secrets,
        _bad_final_quoting_secrets,
        _step_quoting_secrets,
        httpx.ConnectError(f"cannot reach, key {API_KEY} {HEADER_SECRET}"),
    ],
    ids=["echoed-auth", "error-line", "bare-402", "bad-final", "step", "connect-error"],
)
async def test_secrets_never_reach_errors_or_logs(
    answer: Answer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Gateway-Token": HEADER_SECRET}
    async with chaindesk(answer, api_key=API_KEY, headers=headers) as (client, recorder):
        events = await collect(client)
    sent = recorder.last.headers
    assert sent["authorization"] == f"Bearer {API_KEY}"  # they were really sent
    assert sent["x-gateway-token"] == HEADER_SECRET
    assert_redacted(logged_texts(failure(events), caplog.records), API_KEY, HEADER_SECRET)


@pytest.mark.parametrize("call", ["feedback", "check"])
async def test_secrets_never_reach_errors_of_other_calls(
    call: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Gateway-Token": HEADER_SECRET}
    async with chaindesk(_echo_auth, api_key=API_KEY, headers=headers) as (client, _):
        operation = (
            client.feedback(AnswerRef("m", USER), Rating.LIKE)
            if call == "feedback"
            else client.check()
        )
        with pytest.raises(AgentAuthError) as caught:
            await operation
    texts = [str(caught.value), *(r.getMessage() for r in caplog.records)]
    assert all(API_KEY not in t and HEADER_SECRET not in t for t in texts)
    assert "***" in str(caught.value)


# --- the fake itself -----------------------------------------------------------------------------


async def test_fake_non_streaming_shapes() -> None:
    fake = FakeChaindesk(FakeAgent(private=True))
    async with httpx.AsyncClient(transport=fake.transport(), base_url="https://x") as http:
        refused = await http.post(f"/api/agents/{DEFAULT_AGENT_ID}/query", json={"query": "q"})
        assert (refused.status_code, refused.json()) == (403, {"error": "UNAUTHORIZED"})
        key = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        whole = await http.post(
            f"/agents/query/{DEFAULT_AGENT_ID}", json={"query": "a b"}, headers=key
        )
        unknown = await http.get("/api/agents/clnope")
        page = await http.get("/pricing")
    assert whole.status_code == 200
    answer = whole.json()
    assert answer["answer"] == "Echo: a b"
    assert set(answer) >= {"messageId", "conversationId", "visitorId", "sources", "usage"}
    assert (unknown.status_code, unknown.content) == (200, b"null")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]


async def test_fake_fail_next() -> None:
    fake = FakeChaindesk()
    fake.fail_next(api_error("RATE_LIMIT", streaming=True))
    async with served(fake) as client:
        assert type(failure(await collect(client))) is AgentRateLimited
        check_contract(await collect(client))


async def test_fake_streams_like_the_transcript() -> None:
    """Same framing as chaindesk-stream.txt: the fake's bytes parse into the same shapes."""
    script = Script(
        chunks=["Hello", "! Our", " Pro plan", " costs $29/month.", "\n\n- Unlimited", " agents"],
        sources=catalogue("chaindesk-query-response.json")["sources"],
    )
    fake = FakeChaindesk(FakeAgent(default_script=script))
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        reply = await http.post(
            f"https://x/api/agents/{DEFAULT_AGENT_ID}/query",
            json={"query": "q", "streaming": True},
        )
    wire = reply.content.decode()
    expected = body("chaindesk-stream.txt").decode()
    # Identical up to the ids in endpoint_response.
    assert (
        wire.split("event: endpoint_response")[0] == expected.split("event: endpoint_response")[0]
    )
    assert wire.endswith("\n\nevent: \ndata: [DONE]\n\n")
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["cache-control"] == "no-cache, no-transform"
