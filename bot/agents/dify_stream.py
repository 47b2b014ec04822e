"""What both Dify adapters share: the SSE stream, the error mapping, the request plumbing.

The Service API (`dify.py`, `/v1`) and the console API (`dify_console.py`, `/console/api`,
also behind Olares' gateway) stream exactly the same events (SPEC.md §C.4: the console runs the
app in debugger mode with the same converters) and answer errors in the same
`{code, message, status}` shape (§C.5). Only paths, request bodies and authentication differ,
so those stay in the adapters and everything else lives here:
- `DifyWire`: one app's `AgentWire` (http.py) that reads Dify's error bodies, with a streaming
  chat call that keeps the stream contract of base.py and readers for Dify's JSON replies.
- `StreamState`: Dify's event objects -> AgentEvents (text, replace, sources, end, error).
- `ThinkingSplitter`: the reasoning block Dify 0.15.3 puts in front of the answer.
- `map_http_error` / `map_stream_error`: Dify's error codes -> the AgentError hierarchy.

Wire facts relied on (verified against a live Dify 0.15.3, see the transcripts):
- Events are `data: {json}` with no `event:` line, except `event: ping` about every 10 s.
  Headers arrive only with the first event.
- Every event carries `conversation_id` and `message_id`; all but `error` carry `task_id`.
- Text comes as `message` (chat, chatflow) or `agent_message` (agent-chat). A normal end,
  including after a stop, is `message_end`; a failure is one `error` event and no end.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import httpx
from httpx_sse import ServerSentEvent

from bot.agents.base import (
    AgentBadRequest,
    AgentError,
    AgentEvent,
    AgentProtocolError,
    AgentQuotaExceeded,
    AgentRateLimited,
    AgentStreamCut,
    AgentUpstreamError,
    ConversationNotFound,
    Failed,
    Finished,
    FinishReason,
    ReasoningDelta,
    Source,
    Sources,
    Started,
    TextDelta,
    TextReplace,
    Usage,
)
from bot.agents.http import (
    AgentSettings,
    AgentWire,
    Reply,
    error_for_status,
    excerpt,
    is_event_stream,
    iter_sse,
    parse_json,
    parse_retry_after,
    read_reply,
    redact,
    token_usage,
)

__all__ = [
    "DifyErrorMapper",
    "DifyWire",
    "StreamState",
    "ThinkingSplitter",
    "dify_http_error",
    "error_fields",
    "map_http_error",
    "map_stream_error",
    "sources_from_resources",
    "suggestions_disabled",
]

# (status, code, message, response headers) -> the error; adapters refine Dify's mapping.
DifyErrorMapper = Callable[[int, str | None, str, httpx.Headers], AgentError]


def dify_http_error(
    status: int, code: str | None, message: str, headers: httpx.Headers
) -> AgentError:
    """The default `DifyErrorMapper`: `map_http_error` with the Retry-After header."""
    return map_http_error(status, code, message, retry_after=parse_retry_after(headers))


class DifyWire(AgentWire):
    """One Dify app's HTTP side: an `AgentWire` that reads Dify's error bodies and streams.

    `map_error` refines the mapping of Dify's `{code, message}` errors (the console adds the
    gateway's); `cut_detail` is the detail of the AgentStreamCut for a stream that ends without
    `message_end`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        config: AgentSettings,
        *,
        own_headers: Mapping[str, str],
        logger: logging.Logger,
        map_error: DifyErrorMapper = dify_http_error,
        cut_detail: str = "the stream ended without message_end",
    ) -> None:
        super().__init__(
            http, config, logger=logger, own_headers=own_headers, map_error=self._http_error
        )
        self._map_dify_error = map_error
        self._cut_detail = cut_detail

    async def stream(self, path: str, body: Mapping[str, Any]) -> AsyncGenerator[AgentEvent, None]:
        """POST a streaming chat request; events per the stream contract (never raises)."""
        what = path.rsplit("/", 1)[-1]
        state = StreamState(self.secrets)
        try:
            async with self.open_stream("POST", path, json=body) as response:
                if response.status_code != 200 or not is_event_stream(response):
                    raise self.refused_stream(await read_reply(response), what)
                async with aclosing(self._events(response, state, what)) as events:
                    async for event in events:
                        yield event
                if state.done:
                    return
            # EOF without message_end or error: e.g. Olares' gateway cuts every stream at 30 s.
            raise AgentStreamCut(self._cut_detail)
        except AgentError as exc:
            self.log_failure(what, exc)
            for event in state.fail(exc):
                yield event

    def json_object(self, reply: Reply, what: str) -> dict[str, Any]:
        """The JSON object of a successful reply (raises for errors and unreadable bodies)."""
        self.raise_for(reply, what)
        obj = reply.json()
        if not isinstance(obj, dict):
            raise self.protocol_error(what, "not a JSON object", reply.body)
        return obj

    def data_list(self, reply: Reply, what: str) -> list[Any]:
        """`data` of a successful `{"data": [...]}` reply (suggestions, statistics)."""
        data = self.json_object(reply, what).get("data")
        if not isinstance(data, list):
            raise self.protocol_error(what, "no data list", reply.body)
        return data

    def suggestions(self, reply: Reply, what: str) -> list[str]:
        """Follow-up questions from a suggested-questions reply; [] when the feature is off."""
        if suggestions_disabled(reply):
            return []
        return [
            item for item in self.data_list(reply, what) if isinstance(item, str) and item.strip()
        ]

    def _http_error(self, reply: Reply) -> AgentError:
        code, message = error_fields(reply.body)
        if message is None:
            message = excerpt(reply.body) or f"HTTP {reply.status}"
        return self._map_dify_error(reply.status, code, self.redact(message), reply.headers)

    async def _events(
        self, response: httpx.Response, state: StreamState, what: str
    ) -> AsyncGenerator[AgentEvent, None]:
        async for sse in iter_sse(response):
            obj = self._decode(sse, what)
            if obj is None:
                continue
            for event in state.handle(obj):
                if isinstance(event, Finished):
                    self.logger.debug(
                        "%s: answer %s finished (%s), usage %s",
                        self.label,
                        event.message_id,
                        event.finish_reason,
                        event.usage,
                    )
                yield event
            if state.done:
                return

    def _decode(self, sse: ServerSentEvent, what: str) -> dict[str, Any] | None:
        """The JSON object of one SSE event; None for pings and data-less events."""
        if sse.event == "ping" or not sse.data.strip():
            return None
        obj = parse_json(sse.data)
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
            raise self.protocol_error(what, "unreadable event", sse.data)
        return obj


# --- error mapping -------------------------------------------------------------------------------


def suggestions_disabled(reply: Reply) -> bool:
    """The app has follow-up suggestions off: an empty list, not an error (C.7)."""
    code, message = error_fields(reply.body)
    if reply.status == 400 and message and "suggested questions is disabled" in message.lower():
        return True
    return reply.status == 403 and code == "app_suggested_questions_after_answer_disabled"


def error_fields(body: bytes) -> tuple[str | None, str | None]:
    """`code` and `message` of a Dify error body `{code, message, status}`, when it is one."""
    obj = parse_json(body)
    if not isinstance(obj, dict):
        return None, None
    code, message = obj.get("code"), obj.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


# Dify error codes that mean the app itself is misconfigured, not that a call failed.
_CONFIG_CODES: Final = frozenset(
    {"provider_not_initialize", "model_currently_not_support", "app_unavailable", "not_chat_app"}
)
_QUOTA_CODES: Final = frozenset({"provider_quota_exceeded", "quota_exceeded"})
_RATE_CODES: Final = frozenset({"rate_limit_error", "too_many_requests"})
# Provider messages wrapped into completion_request_error, e.g. "[openai] Rate Limit Error,
# Error code: 429 - ..." or OpenAI's "You exceeded your current quota" (also a 429).
_QUOTA_WORDING: Final = re.compile(r"insufficient_quota|exceeded your current quota", re.I)
_RATE_WORDING: Final = re.compile(
    r"rate[ _-]?limit|too many requests|error code: 429|status code 429", re.I
)


def map_http_error(
    status: int, code: str | None, message: str, *, retry_after: float | None = None
) -> AgentError:
    """A Dify error answered before the stream: status plus `{code, message}`.

    | status / code                                     | error                |
    |---------------------------------------------------|----------------------|
    | 401, 403                                          | AgentAuthError       |
    | 402, `provider_quota_exceeded`, quota wording     | AgentQuotaExceeded   |
    | 404 "Conversation Not Exists."                    | ConversationNotFound |
    | 400 `conversation_completed`                      | ConversationNotFound |
    | 404 otherwise ("Message Not Exists.", app)        | AgentNotFound        |
    | 429, rate-limit codes or wording                  | AgentRateLimited     |
    | 400 `completion_request_error`                    | AgentUpstreamError   |
    | other 4xx (`invalid_param`, `not_chat_app`, ...)  | AgentBadRequest      |
    | 5xx                                               | AgentUnavailable     |
    """
    # Unknown, deleted and foreign conversations all give this 404 (C.7); an ended one is
    # "The conversation has ended. Please start a new conversation.": both mean start anew.
    if status == 404 and "conversation not exists" in message.lower():
        return ConversationNotFound(message, status=status, code=code)
    if code == "conversation_completed":
        return ConversationNotFound(message, status=status, code=code)
    if status in (401, 402, 403, 404) or status >= 500:
        return error_for_status(status, message, code=code, retry_after=retry_after)
    refined = _refine_by_code(status, code, message, retry_after)
    if refined is not None:
        return refined
    if code == "completion_request_error":  # the model provider failed (blocking path, 34)
        return AgentUpstreamError(message, status=status, code=code)
    return error_for_status(status, message, code=code, retry_after=retry_after)


def map_stream_error(code: str | None, status: int | None, message: str) -> AgentError:
    """A Dify `error` event after the stream began (provider failure, quota, workflow failure).

    | code / wording                                           | error              |
    |----------------------------------------------------------|--------------------|
    | `provider_quota_exceeded`, quota wording                 | AgentQuotaExceeded |
    | status 429, `rate_limit_error`, rate-limit wording       | AgentRateLimited   |
    | `provider_not_initialize`, `model_currently_not_support` | AgentBadRequest    |
    | `completion_request_error`, `internal_server_error`, any | AgentUpstreamError |
    """
    refined = _refine_by_code(status, code, message, None)
    if refined is not None:
        return refined
    if code in _CONFIG_CODES:
        return AgentBadRequest(message, status=status, code=code)
    return AgentUpstreamError(message, status=status, code=code)


def _refine_by_code(
    status: int | None, code: str | None, message: str, retry_after: float | None
) -> AgentError | None:
    if code in _QUOTA_CODES or _QUOTA_WORDING.search(message):
        return AgentQuotaExceeded(message, status=status, code=code)
    if status == 429 or code in _RATE_CODES or _RATE_WORDING.search(message):
        return AgentRateLimited(message, status=status, code=code, retry_after=retry_after)
    return None


# --- the stream state machine --------------------------------------------------------------------


class StreamState:
    """Turns Dify's event objects into AgentEvents, keeping the stream contract of base.py."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self.done = False
        self._secrets = secrets  # error events quote provider messages, which may quote keys
        self._started = False
        self._thinking = ThinkingSplitter()
        self._stopped = False  # a chatflow reported workflow_finished with status "stopped"

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        if not self._started:
            started = _started_from(obj)
            if started is not None:
                self._started = True
                events.append(started)
        kind = obj["event"]
        if kind in ("message", "agent_message"):
            events.extend(self._thinking.feed(_text_field(obj, "answer")))
        elif kind == "message_replace":
            events.append(TextReplace(self._thinking.replace(_text_field(obj, "answer"))))
        elif kind == "message_end":
            events.extend(self._end(obj))
        elif kind == "error":
            events.extend(self.fail(_stream_error(obj, self._secrets)))
        elif kind == "workflow_finished":
            data = obj.get("data")
            self._stopped = isinstance(data, dict) and data.get("status") == "stopped"
        # Everything else carries no answer text: agent_thought (tool calls), message_file,
        # tts_message*, workflow/node/iteration/loop events, and whatever newer versions add.
        return events

    def fail(self, error: AgentError) -> list[AgentEvent]:
        """Flush text held back by the reasoning splitter, then fail: the partial text stays."""
        if self.done:
            return []
        self.done = True
        return [*self._thinking.flush(), Failed(error)]

    def _end(self, obj: dict[str, Any]) -> list[AgentEvent]:
        self.done = True
        events: list[AgentEvent] = list(self._thinking.flush())
        metadata = obj.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        sources = sources_from_resources(metadata.get("retriever_resources"))
        if sources:
            events.append(Sources(sources))
        events.append(
            Finished(
                message_id=_id(obj.get("message_id")) or _id(obj.get("id")),
                conversation=_id(obj.get("conversation_id")),
                finish_reason=FinishReason.STOPPED if self._stopped else FinishReason.STOP,
                usage=_usage(metadata.get("usage")),
            )
        )
        return events


def _started_from(obj: Mapping[str, Any]) -> Started | None:
    task_id = _id(obj.get("task_id"))
    message_id = _id(obj.get("message_id"))
    conversation = _id(obj.get("conversation_id"))
    if task_id is None and message_id is None and conversation is None:
        return None
    return Started(task_id=task_id, message_id=message_id, conversation=conversation)


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _text_field(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AgentProtocolError(f"{obj.get('event')}.{key} is {type(value).__name__}, not text")
    return value


def _stream_error(obj: Mapping[str, Any], secrets: tuple[str, ...]) -> AgentError:
    code = obj.get("code")
    status = obj.get("status")
    message = obj.get("message")
    return map_stream_error(
        code if isinstance(code, str) else None,
        status if isinstance(status, int) else None,
        redact(message, secrets) if isinstance(message, str) and message else "error event",
    )


def _usage(value: object) -> Usage | None:
    return token_usage(value, "prompt_tokens", "completion_tokens", "total_tokens")


# --- citations -----------------------------------------------------------------------------------

# Keys under which a resource may carry a link: none in 0.15.3, but website-crawl datasets and
# 1.x `doc_metadata` can carry one, and a link is worth showing when present.
_URL_KEYS: Final = ("url", "source_url", "document_url", "link", "source")


def sources_from_resources(resources: object) -> tuple[Source, ...]:
    """`metadata.retriever_resources` as sources: ordered by position, one per document."""
    if not isinstance(resources, list):
        return ()
    items = [r for r in resources if isinstance(r, dict)]
    # Stable sort: resources without a position keep their place after the numbered ones.
    items.sort(key=_position)
    seen: set[str] = set()
    sources: list[Source] = []
    for item in items:
        title = _text(item.get("document_name")) or _text(item.get("dataset_name"))
        if title is None:
            continue
        key = _text(item.get("document_id")) or f"{_text(item.get('dataset_id'))}/{title}"
        if key in seen:
            continue
        seen.add(key)
        sources.append(Source(title=title, url=_resource_url(item)))
    return tuple(sources)


def _position(item: Mapping[str, Any]) -> float:
    position = item.get("position")
    if isinstance(position, int | float) and not isinstance(position, bool):
        return float(position)
    return float("inf")


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _resource_url(item: Mapping[str, Any]) -> str | None:
    metadata = item.get("doc_metadata")
    for holder in (item, metadata if isinstance(metadata, dict) else {}):
        for key in _URL_KEYS:
            value = holder.get(key)
            if isinstance(value, str) and value.startswith(("https://", "http://")):
                return value
    return None


# --- reasoning -----------------------------------------------------------------------------------

_DETAILS_OPEN: Final = "<details"
_SUMMARY_OPEN: Final = "<summary>"
_SUMMARY_CLOSE: Final = "</summary>"
_THINK_OPEN: Final = "<think>"
# A real opening is ~110 characters; anything longer that still is not one is ordinary text.
_MAX_OPENING: Final = 512


@dataclass(frozen=True, slots=True)
class _Opening:
    end: int  # index just after the opening in the buffer
    closing: str


class _Undecided(Enum):
    PENDING = "pending"  # the text so far may still become an opening


_PENDING: Final = _Undecided.PENDING


class ThinkingSplitter:
    """Separates a leading reasoning block from answer text, across arbitrary chunk splits.

    Dify 0.15.3 wraps a model's `reasoning_content` into the answer as
    `<details style="..." open> <summary> Thinking... </summary>REASONING</details>ANSWER`
    (`_wrap_thinking_by_reasoning_content`); models that think inline write `<think>...</think>`.
    Only a block at the very start of the answer counts. Text is held back only while it can
    still be the start of such a block or of its closing tag, so ordinary text flows at once.
    """

    def __init__(self) -> None:
        self._state = "start"  # start -> reasoning -> answer, or start -> answer
        self._held = ""
        self._closing = ""
        self._strip_leading = False  # drop the blank lines between the block and the answer

    def feed(self, chunk: str) -> list[TextDelta | ReasoningDelta]:
        if not chunk:
            return []
        if self._state == "answer":
            return self._answer(chunk)
        data = self._held + chunk
        self._held = ""
        if self._state == "start":
            return self._start(data)
        return self._reasoning(data)

    def flush(self) -> list[TextDelta | ReasoningDelta]:
        """Release what is held back (the stream ended)."""
        held, self._held = self._held, ""
        if not held:
            return []
        if self._state == "reasoning":
            return [ReasoningDelta(held)]
        self._state = "answer"
        return [TextDelta(held)]

    def replace(self, text: str) -> str:
        """The answer part of a full replacement text (Dify's output moderation)."""
        fresh = ThinkingSplitter()
        parts = [*fresh.feed(text), *fresh.flush()]
        self._state, self._held = "answer", ""
        return "".join(p.text for p in parts if isinstance(p, TextDelta))

    def _start(self, data: str) -> list[TextDelta | ReasoningDelta]:
        opening = _match_opening(data)
        if opening is _PENDING:
            self._held = data
            return []
        if opening is None:
            self._state = "answer"
            return [TextDelta(data)]
        self._state, self._closing = "reasoning", opening.closing
        return self._reasoning(data[opening.end :])

    def _reasoning(self, data: str) -> list[TextDelta | ReasoningDelta]:
        index = data.find(self._closing)
        if index < 0:
            keep = _partial_suffix(data, self._closing)
            self._held = data[len(data) - keep :] if keep else ""
            visible = data[: len(data) - keep]
            return [ReasoningDelta(visible)] if visible else []
        events: list[TextDelta | ReasoningDelta] = []
        if index:
            events.append(ReasoningDelta(data[:index]))
        self._state, self._strip_leading = "answer", True
        events.extend(self._answer(data[index + len(self._closing) :]))
        return events

    def _answer(self, text: str) -> list[TextDelta | ReasoningDelta]:
        if self._strip_leading:
            text = text.lstrip()
            if not text:
                return []
            self._strip_leading = False
        return [TextDelta(text)] if text else []


def _partial_suffix(data: str, tag: str) -> int:
    """Length of the longest end of `data` that is a proper beginning of `tag`."""
    for size in range(min(len(tag) - 1, len(data)), 0, -1):
        if data.endswith(tag[:size]):
            return size
    return 0


def _match_opening(data: str) -> _Opening | _Undecided | None:
    """A complete opening at the start of `data`, `_PENDING` if it may still become one, or None."""
    if data.startswith(_THINK_OPEN):
        return _Opening(len(_THINK_OPEN), "</think>")
    result = _match_details(data[:_MAX_OPENING])
    if result is _PENDING and len(data) >= _MAX_OPENING:
        return None
    return result


def _match_details(data: str) -> _Opening | _Undecided | None:
    """`<details ...>` + spaces + `<summary>Thinking...</summary>`, matched incrementally."""
    if not data.startswith(_DETAILS_OPEN):
        prefix = _DETAILS_OPEN.startswith(data) or _THINK_OPEN.startswith(data)
        return _PENDING if prefix else None
    rest = data[len(_DETAILS_OPEN) :]
    if not rest:
        return _PENDING
    if rest[0] not in " \t\r\n>":
        return None  # <detailsfoo ...>
    tag_end = rest.find(">")
    if tag_end < 0:
        return _PENDING
    summary_start = len(_DETAILS_OPEN) + tag_end + 1
    after = data[summary_start:]
    stripped = after.lstrip()
    summary_start += len(after) - len(stripped)
    if not stripped.startswith(_SUMMARY_OPEN):
        return _PENDING if _SUMMARY_OPEN.startswith(stripped) else None
    summary_end = stripped.find(_SUMMARY_CLOSE)
    if summary_end < 0:
        return _PENDING
    summary = stripped[len(_SUMMARY_OPEN) : summary_end].strip().lower()
    if not summary.startswith("think"):  # a collapsible section of the answer, not reasoning
        return None
    return _Opening(summary_start + summary_end + len(_SUMMARY_CLOSE), "</details>")
