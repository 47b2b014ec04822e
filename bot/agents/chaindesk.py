"""Chaindesk agents (`/agents/{id}/query`; also gptbots.chat, a copy of its docs): SPEC.md §B.

Wire facts this adapter relies on (read in the Chaindesk sources, release 0.1.103 and 2024):
- `POST /api/agents/{id}/query` is the route; `/agents/{id}/query` exists only on hosts whose
  Next.js config rewrites it (api.chaindesk.ai). A host without the rewrite answers Next.js'
  HTML 404 page, which is how the adapter tells a missing route from an unknown agent.
- With `"streaming": true` every SSE payload except `[DONE]` is `encodeURIComponent`-encoded.
  `answer` events carry the model's deltas (empty ones too); `endpoint_response` carries the
  stored answer with its ids and sources; an event with an empty name carries `[DONE]`.
- Errors before the headers: the real status, no Content-Type, body `data: [ERROR]<CODE>`.
  Errors after them: `data: [ERROR]<message>` (no event name, not encoded, no `[DONE]`).
- The server retries a failed completion (`pRetry`), so streamed text can repeat: the answer
  in `endpoint_response` is the truth. There are no pings and no stop endpoint (closing the
  connection aborts the model call); feedback is good/bad only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote

import httpx
from httpx_sse import ServerSentEvent

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentError,
    AgentEvent,
    AgentNotFound,
    AgentQuotaExceeded,
    AgentRateLimited,
    AgentRequest,
    AgentStreamCut,
    AgentUnavailable,
    AgentUpstreamError,
    AnswerRef,
    Failed,
    Finished,
    FinishReason,
    Rating,
    Source,
    Sources,
    Started,
    TextDelta,
    TextReplace,
    Usage,
)
from bot.agents.http import (
    REPLY_BODY_LIMIT,
    AgentWire,
    Reply,
    error_for_status,
    excerpt,
    is_event_stream,
    iter_sse,
    parse_json,
    parse_retry_after,
    read_body,
    read_reply,
    token_usage,
)
from bot.config import ChaindeskAgentConfig

logger = logging.getLogger("relaygram.agents.chaindesk")

__all__ = [
    "OPTIONAL_FIELDS",
    "ChaindeskClient",
    "decode_payload",
    "error_message",
    "map_error",
    "sources_from_response",
]

# Config fields sent in the query body exactly as configured, and only when set (SPEC B.2).
OPTIONAL_FIELDS: Final = (
    "temperature",
    "modelName",
    "maxTokens",
    "topP",
    "presencePenalty",
    "frequencyPenalty",
    "filters",
    "systemPrompt",
    "userPrompt",
    "promptType",
    "promptTemplate",
)

_DONE: Final = "[DONE]"
_ERROR: Final = "[ERROR]"
_RATINGS: Final = {Rating.LIKE: "good", Rating.DISLIKE: "bad"}


class ChaindeskClient:
    """One Chaindesk agent; the API key is needed only for private agents. Feedback supported.

    There is no stop endpoint (closing the stream aborts the answer server-side), no follow-up
    suggestions and no branching: the server keeps the history of `conversationId` itself.
    """

    platform: str = "chaindesk"
    # The platform's MessageEval enum is good | bad: a rating cannot be withdrawn.
    feedback_clearable: bool = False

    def __init__(self, config: ChaindeskAgentConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.title = config.title or config.name
        self._config = config
        root, via_api = _split_root(config.base_url.rstrip("/"))
        agent = quote(config.agent_id, safe="")
        self._rewritten_path = f"/agents/{agent}/query"
        self._api_path = f"/api/agents/{agent}/query"
        self._agent_path = f"/api/agents/{agent}"
        # Which query path this host serves; None until a request has told (SPEC B.1).
        self._query_path: str | None = self._api_path if via_api else None
        own = {}
        if config.api_key is not None and config.api_key.get_secret_value():
            # The server reads `split(' ')[1]` of the header; "Bearer" is what the docs show.
            own["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        # Every path here is built from the host root (see `_split_root`).
        self._wire = AgentWire(
            http,
            config,
            logger=logger,
            map_error=self._http_error,
            own_headers=own,
            base_url=root,
        )

    # --- AgentClient -----------------------------------------------------------------------------

    async def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        state = _StreamState(request.conversation)
        try:
            async with self._open_query(request) as response:
                if is_event_stream(response):
                    async with aclosing(self._events(response, state)) as events:
                        async for event in events:
                            yield event
                else:  # a JSON answer although a stream was asked for (see _open_query)
                    for event in await self._whole_answer(response, state):
                        yield event
            for event in state.end_of_body():
                yield event
        except AgentError as exc:
            ending = state.fail(exc)
            if ending and isinstance(ending[-1], Failed):  # not after the final answer
                self._wire.log_failure("query", exc)
            for event in ending:
                yield event

    async def check(self) -> str:
        """`GET /api/agents/{id}` ("Agent - Get"): proves the id and, for a private agent, the key.

        Public agents answer without a key, so a wrong key goes unnoticed until the agent is
        made private. Unknown ids get `200 null` from Chaindesk (not a 404).
        """
        reply = await self._wire.fetch("GET", self._agent_path)
        self._wire.raise_for(reply, "agent")
        agent = reply.json()
        if agent is None:
            raise AgentNotFound("no agent with this id", status=reply.status)
        if not isinstance(agent, dict):
            raise self._wire.protocol_error("agent", "not an agent object", reply.body)
        name = agent.get("name")
        return f"Chaindesk agent {name!r}" if isinstance(name, str) and name else "Chaindesk agent"

    # --- capabilities ----------------------------------------------------------------------------

    async def feedback(self, answer: AnswerRef, rating: Rating | None) -> None:
        if rating is None:
            raise AgentBadRequest("Chaindesk cannot clear a rating")
        body = {"messageId": answer.message_id, "eval": _RATINGS[rating], "visitorId": answer.user}
        # Always under /api: the rewrites cover /agents, not /conversations (SPEC B.6).
        reply = await self._wire.fetch("POST", "/api/conversations/eval-answer", json=body)
        self._wire.raise_for(reply, "eval-answer")

    # --- the query request -----------------------------------------------------------------------

    def _query_body(self, request: AgentRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"query": request.text, "streaming": True}
        if request.conversation:
            body["conversationId"] = request.conversation
        # Stable per Telegram user (or group): the platform groups a visitor's conversations.
        body["visitorId"] = request.user
        for field in OPTIONAL_FIELDS:
            value = getattr(self._config, field)
            if value is not None:
                # Sent as configured, including `temperature = 0`, although the server reads
                # `temperature || agent.temperature` and so treats 0 as "the agent's default".
                body[field] = value
        return body

    @asynccontextmanager
    async def _open_query(self, request: AgentRequest) -> AsyncIterator[httpx.Response]:
        """The query response, ready to read: a 200 event stream (or a 200 JSON answer).

        Tries the path this host served last (at first the documented `/agents/...`), then the
        other one when the host answered as if the route did not exist (`_route_missing`), and
        remembers what worked. Every other answer is raised as an AgentError.
        """
        preferred = self._query_path or self._rewritten_path
        paths = [
            preferred,
            self._api_path if preferred == self._rewritten_path else self._rewritten_path,
        ]
        body = self._query_body(request)
        for attempt, path in enumerate(paths, start=1):
            async with self._wire.open_stream("POST", path, json=body) as response:
                status = response.status_code
                if status == 200 and (is_event_stream(response) or _is_json(response)):
                    self._learn(path)
                    yield response
                    return
                reply = await read_reply(response)
            if not _route_missing(reply):
                raise self._wire.refused_stream(reply, "query")
            if attempt == len(paths):
                raise AgentNotFound(
                    f"no Chaindesk query route: {' and '.join(paths)} answered "
                    f"HTTP {status} without a Chaindesk error",
                    status=status,
                )
            logger.info(
                "chaindesk agent %s: %s does not exist on this host; trying %s",
                self.name,
                path,
                paths[attempt],
            )

    def _learn(self, path: str) -> None:
        if path != self._query_path:
            # Worth an info line only when the documented path is not the one that works.
            level = logging.INFO if path == self._api_path else logging.DEBUG
            logger.log(level, "chaindesk agent %s: this host serves %s", self.name, path)
            self._query_path = path

    async def _events(
        self, response: httpx.Response, state: _StreamState
    ) -> AsyncGenerator[AgentEvent, None]:
        async for sse in iter_sse(response):
            for event in self._handle(sse, state):
                if isinstance(event, Finished):
                    logger.debug(
                        "chaindesk agent %s: answer %s finished", self.name, event.message_id
                    )
                yield event
            if state.done:
                return

    def _handle(self, sse: ServerSentEvent, state: _StreamState) -> list[AgentEvent]:
        data = sse.data
        # Checked before the event name: `[DONE]` comes with an empty name, `[ERROR]` with none,
        # and an encoded payload can never look like either (`[` is always percent-encoded).
        if data == _DONE:
            return state.done_marker()
        if data.startswith(_ERROR):
            error = map_error(None, self._wire.redact(data[len(_ERROR) :].strip()))
            events = state.fail(error)
            if events and isinstance(events[-1], Failed):
                self._wire.log_failure("stream", error)
            return events
        if sse.event == "answer":
            return state.answer(decode_payload(data))
        if sse.event == "endpoint_response":
            return state.final(self._endpoint_response(data))
        if sse.event == "step":  # 2024: "Searching the web for ..."; status text, not answer
            text = self._wire.redact(excerpt(decode_payload(data)))
            logger.debug("chaindesk agent %s: step %r", self.name, text)
        # tool_call, metadata (2024 form agents) and anything newer carry no answer text.
        return []

    def _endpoint_response(self, data: str) -> dict[str, Any]:
        obj = parse_json(decode_payload(data))
        if not isinstance(obj, dict):
            raise self._wire.protocol_error("query", "unreadable endpoint_response", data)
        return obj

    async def _whole_answer(
        self, response: httpx.Response, state: _StreamState
    ) -> list[AgentEvent]:
        """A non-streaming answer (`{answer, sources, messageId, conversationId, ...}`, SPEC B.3).

        Chaindesk streams when asked; this only keeps a proxy or an older revision that answers
        the whole thing at once from failing a complete answer.
        """
        raw = await read_body(response, limit=REPLY_BODY_LIMIT)
        obj = parse_json(raw)
        if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
            raise self._wire.protocol_error("query", "expected an event stream or an answer", raw)
        return [*state.final(obj), *state.done_marker()]

    # --- errors ----------------------------------------------------------------------------------

    def _http_error(self, reply: Reply) -> AgentError:
        message = error_message(reply.body)
        if message is None:  # not Chaindesk speaking: a proxy's or Next.js' page
            message = _foreign_body(reply.status, reply.body)
        return map_error(
            reply.status,
            self._wire.redact(message),
            retry_after=parse_retry_after(reply.headers),
        )


def _split_root(base_url: str) -> tuple[str, bool]:
    """The host root, and whether the operator pointed at `/api` already.

    `https://app.chaindesk.ai/api` (as in one of Chaindesk's docs) and `https://api.chaindesk.ai`
    both work: every path here is built from the root, and an `/api` base means "no rewrite".
    """
    if base_url.endswith("/api"):
        return base_url.removesuffix("/api"), True
    return base_url, False


def _foreign_body(status: int, body: bytes) -> str:
    """A short description of an error body that is not Chaindesk's."""
    text = excerpt(body).strip()
    if text.startswith("<"):  # Next.js' or a proxy's HTML page says nothing useful in a log
        return f"HTTP {status} with an HTML page, not a Chaindesk answer"
    return text or f"HTTP {status}"


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _route_missing(reply: Reply) -> bool:
    """The host has no such route, as opposed to Chaindesk saying the agent does not exist.

    Chaindesk's own 404 always carries its error (`data: [ERROR]NOT_FOUND` when streaming,
    `{"error": "NOT_FOUND"}` otherwise). A host without the `/agents` rewrite answers Next.js'
    HTML 404 page, an empty body, or a proxy's text; a page route may even answer 405 or render
    HTML with 200. None of these is a Chaindesk error, so they mean "try the other path".
    """
    if reply.status in (404, 405):
        return error_message(reply.body) is None
    content_type: str = reply.headers.get("content-type", "")
    return reply.status == 200 and "text/html" in content_type.lower()


# --- payloads ----------------------------------------------------------------------------------


def decode_payload(data: str) -> str:
    """`decodeURIComponent` of one SSE payload (percent-encoded UTF-8; `+` stays a plus)."""
    # The server encodes complete JS strings, so invalid UTF-8 cannot occur; should a broken
    # proxy produce some, one replacement character is better than losing the answer.
    return unquote(data, encoding="utf-8", errors="replace")


def error_message(body: bytes) -> str | None:
    """Chaindesk's error text in a non-SSE body: `data: [ERROR]X` or `{"error": "X"}`."""
    obj = parse_json(body)
    if isinstance(obj, dict):
        error = obj.get("error")
        return error if isinstance(error, str) else None
    text = body.decode("utf-8", errors="replace")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("data:"):
            line = line.removeprefix("data:").lstrip()
        if line.startswith(_ERROR):
            return line[len(_ERROR) :].strip()
    return None


# --- error mapping -------------------------------------------------------------------------------

# ApiErrorType names (`packages/lib/api-error.ts`) and what they mean for the bot.
_CODE_ERRORS: Final[Mapping[str, tuple[type[AgentError], str]]] = {
    "USAGE_LIMIT": (AgentQuotaExceeded, "the agent's usage limit is reached"),
    "UNAUTHORIZED": (
        AgentAuthError,
        "refused: a private agent without the right API key, or a datastore filter outside "
        "the agent",
    ),
    "NOT_FOUND": (AgentNotFound, "no agent with this id"),
    "INVALID_REQUEST": (AgentBadRequest, "the platform rejected the request"),
    "RATE_LIMIT": (AgentRateLimited, "rate limited by the platform"),
}
# Provider messages passed through `[ERROR]`, e.g. OpenAI's "429 Rate limit reached for ...".
_QUOTA_WORDING: Final = re.compile(r"insufficient_quota|exceeded your current quota", re.I)
_RATE_WORDING: Final = re.compile(
    r"rate[ _-]?limit|too many requests|^429\b|error code: 429|status code 429", re.I
)


def map_error(status: int | None, message: str, *, retry_after: float | None = None) -> AgentError:
    """A Chaindesk error: before the stream (`status` set) or an `[ERROR]` line (`status` None).

    | status / message                                  | error              |
    |---------------------------------------------------|--------------------|
    | 402, `USAGE_LIMIT`, provider quota wording        | AgentQuotaExceeded |
    | 401, 403, `UNAUTHORIZED`                          | AgentAuthError     |
    | 404, `NOT_FOUND`                                  | AgentNotFound      |
    | 429, `RATE_LIMIT`, rate-limit wording             | AgentRateLimited   |
    | 400, `INVALID_REQUEST`, other 4xx                 | AgentBadRequest    |
    | 5xx                                               | AgentUnavailable   |
    | any other `[ERROR]` line (the model call failed)  | AgentUpstreamError |
    """
    code = message if message in _CODE_ERRORS else None
    if status is not None and status >= 500:
        return AgentUnavailable(message, status=status, code=code)
    if code is not None:
        cls, description = _CODE_ERRORS[code]
        if cls is AgentRateLimited:
            return AgentRateLimited(description, status=status, code=code, retry_after=retry_after)
        return cls(description, status=status, code=code)
    if status is not None:
        return error_for_status(status, message, retry_after=retry_after)
    if _QUOTA_WORDING.search(message):
        return AgentQuotaExceeded(message)
    if _RATE_WORDING.search(message):
        return AgentRateLimited(message)
    return AgentUpstreamError(message or "the agent failed")


# --- the stream state machine --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Final:
    message_id: str | None
    conversation: str | None
    usage: Usage | None


class _StreamState:
    """Turns decoded Chaindesk events into AgentEvents, keeping the stream contract of base.py.

    Ids exist only in `endpoint_response`, after the text, so `Started` comes there: the
    contract asks for it before the text only when the platform tells ids early. The server
    stores the answer *before* it sends `endpoint_response` (`query.tsx`), so from then on the
    answer is complete: `[DONE]` ends it, and so does anything else (EOF, a late error, a cut).
    """

    def __init__(self, conversation: str | None) -> None:
        self.done = False
        self._request_conversation = conversation
        self._streamed = ""
        self._final: _Final | None = None

    def answer(self, text: str) -> list[AgentEvent]:
        if not text or self._final is not None:  # empty deltas; nothing may follow the truth
            return []
        self._streamed += text
        return [TextDelta(text)]

    def final(self, obj: Mapping[str, Any]) -> list[AgentEvent]:
        if self._final is not None:  # exactly one per answer; a second one changes nothing
            return []
        self._final = _Final(
            message_id=_id(obj.get("messageId")),
            conversation=_id(obj.get("conversationId")) or self._request_conversation,
            usage=_usage(obj.get("usage")),
        )
        events: list[AgentEvent] = [
            Started(message_id=self._final.message_id, conversation=self._final.conversation)
        ]
        replacement = self._replacement(obj.get("answer"), obj.get("approvals"))
        if replacement is not None:
            events.append(TextReplace(replacement))
        sources = sources_from_response(obj.get("sources"))
        if sources:
            events.append(Sources(sources))
        return events

    def _replacement(self, answer: object, approvals: object) -> str | None:
        """The stored answer when it differs from what was streamed (server retries repeat text).

        The stored answer is `.trim()`ed, so whitespace at the ends is no difference. An empty
        stored answer never wipes streamed text: in 2024 versions it means "waiting for a tool
        approval", which a chat user cannot give.
        """
        if not isinstance(answer, str):
            return None
        if not answer.strip():
            if approvals:
                logger.warning("chaindesk answer waits for a tool approval; the bot cannot give it")
            return None
        return answer if answer.strip() != self._streamed.strip() else None

    def done_marker(self) -> list[AgentEvent]:
        if self._final is None:
            # Chaindesk always sends endpoint_response first; without it the text is complete
            # but its ids are unknown (no feedback, and a new conversation is not kept).
            logger.warning("chaindesk stream ended with [DONE] but no endpoint_response")
            self._final = _Final(None, self._request_conversation, None)
        return self._finish()

    def end_of_body(self) -> list[AgentEvent]:
        """The body ended. Normal after `[DONE]`; harmless right after `endpoint_response`."""
        if self.done:
            return []
        if self._final is not None:
            logger.debug("chaindesk stream ended after endpoint_response without [DONE]")
            return self._finish()
        return self.fail(AgentStreamCut("the stream ended without endpoint_response"))

    def fail(self, error: AgentError) -> list[AgentEvent]:
        if self.done:
            return []
        if self._final is not None:
            # The answer was stored and delivered before this; it stands (see the class doc).
            logger.warning("chaindesk stream failed after its final answer (ignored): %s", error)
            return self._finish()
        self.done = True
        return [Failed(error)]

    def _finish(self) -> list[AgentEvent]:
        assert self._final is not None
        self.done = True
        return [
            Finished(
                message_id=self._final.message_id,
                conversation=self._final.conversation,
                finish_reason=FinishReason.STOP,
                usage=self._final.usage,
            )
        ]


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _usage(value: object) -> Usage | None:
    """`usage` of a non-streaming answer `{promptTokens, completionTokens, totalTokens, cost}`."""
    return token_usage(value, "promptTokens", "completionTokens", "totalTokens")


# --- citations -----------------------------------------------------------------------------------


def sources_from_response(sources: object) -> tuple[Source, ...]:
    """`sources[]` of an answer: title = datasource_name, a link only when it is http(s).

    The server already keeps one per datasource, best score first; the order is kept and
    repeats (same datasource, or same title and link) are dropped all the same.
    """
    if not isinstance(sources, list):
        return ()
    seen: set[str] = set()
    result: list[Source] = []
    for item in sources:
        if not isinstance(item, dict):
            continue
        url = _link(item.get("source_url"))
        title = _text(item.get("datasource_name")) or url
        if title is None:
            continue
        key = _text(item.get("datasource_id")) or f"{title}\n{url}"
        if key in seen:
            continue
        seen.add(key)
        result.append(Source(title=title, url=url))
    return tuple(result)


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _link(value: object) -> str | None:
    text = _text(value)
    return text if text is not None and text.startswith(("https://", "http://")) else None
