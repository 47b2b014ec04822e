"""OpenAI-compatible Chat Completions (`{base_url}/chat/completions`), streamed (SPEC.md §A.3).

Meant for Timeweb's per-agent compatible endpoint
(`https://agent.timeweb.cloud/api/v1/cloud-ai/agents/<access id>/v1`) and for any other server
speaking the Chat Completions API. Wire facts this adapter relies on:
- The server keeps no history: every request carries the system prompt, the stored turns
  (trimmed here to the configured limits) and the new message.
- `"stream": true` answers SSE `data: {chunk}` lines and a final `data: [DONE]`; text is in
  `choices[0].delta.content`, a reasoning model's thinking in `delta.reasoning_content` (or
  `delta.reasoning`), and with `stream_options.include_usage` the last chunk carries `usage`.
- Timeweb's stream format is an assumption (`timeweb-openai-stream-EXPECTED-UNVERIFIED.txt`), so
  the reader is lenient where that costs nothing: `[DONE]` without a finish_reason and a
  finish_reason without `[DONE]` are both normal ends, and a server that ignores `stream` and
  answers one JSON completion is accepted. Only EOF with neither is a cut stream.
There is no stop endpoint: stopping is closing the stream, which the bot does by closing the
iterator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Final

import httpx
from httpx_sse import ServerSentEvent

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentError,
    AgentEvent,
    AgentQuotaExceeded,
    AgentRateLimited,
    AgentRequest,
    AgentStreamCut,
    AgentUpstreamError,
    ChatTurn,
    Failed,
    Finished,
    FinishReason,
    HistoryLimits,
    ReasoningDelta,
    Started,
    Usage,
)
from bot.agents.dify import ThinkingSplitter
from bot.agents.http import (
    AgentWire,
    ErrorInfo,
    Reply,
    error_for_status,
    error_info,
    excerpt,
    is_event_stream,
    iter_sse,
    parse_json,
    parse_retry_after,
    read_body,
    read_reply,
    redact,
    token_usage,
)
from bot.config import OpenAIAgentConfig, TimewebAgentConfig

logger = logging.getLogger("relaygram.agents.openai")

__all__ = [
    "TIMEWEB_PROXY_SOURCE",
    "ErrorInfo",
    "OpenAIClient",
    "build_messages",
    "error_info",
    "finish_reason_from",
    "is_timeweb_host",
    "map_http_error",
    "map_stream_error",
    "trim_history",
    "usage_from",
]

# The `x-proxy-source` value sent to Timeweb hosts: the same default the native Timeweb adapter
# uses, so one deployment identifies itself the same way on both routes. (OpenAIAgentConfig has
# no such setting; a configured `headers = { x-proxy-source = "..." }` overrides it.)
TIMEWEB_PROXY_SOURCE: Final[str] = TimewebAgentConfig.model_fields["proxy_source"].default
_TIMEWEB_DOMAIN: Final = "timeweb.cloud"
_DONE: Final = "[DONE]"
# The one streaming call, as it is named in log lines.
_CHAT: Final = "chat/completions"
# The finish_reason with which Timeweb reports a failed generation (SPEC A.2); no OpenAI server
# sends it, but Timeweb's compatible route may pass its native value through.
UPSTREAM_ERROR_REASON: Final = "error"


class OpenAIClient:
    """One OpenAI-compatible endpoint and model. No stop, feedback or suggestions endpoints."""

    platform: str = "openai"

    def __init__(self, config: OpenAIAgentConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.title = config.title or config.name
        # KeepsNoHistory: the bot stores the turns and sends them; the adapter trims them again.
        self.history_limits = HistoryLimits(config.max_history_turns, config.max_history_chars)
        self._config = config
        own = _own_headers(config)
        self._wire = AgentWire(
            http,
            config,
            logger=logger,
            map_error=self._http_error,
            own_headers=own,
            # Timeweb's error bodies are undocumented (SPEC A.2 ⚠️): their excerpt is logged.
            log_error_bodies=True,
        )

    # --- AgentClient -----------------------------------------------------------------------------

    async def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        state = _StreamState(self._wire.secrets)
        try:
            async with self._wire.open_stream(
                "POST", "/chat/completions", json=self._chat_body(request)
            ) as response:
                if response.status_code != 200:
                    reply = await read_reply(response)
                    error = self._http_error(reply)
                    # Logged here, once, with the raw body excerpt (see log_error_bodies).
                    self._wire.log_failure(_CHAT, error, reply.body)
                    for event in state.fail(error):
                        yield event
                    return
                if is_event_stream(response):
                    async with aclosing(self._events(response, state)) as events:
                        async for event in events:
                            yield event
                else:
                    for event in await self._completion(response, state):
                        yield event
            for event in state.end_of_body():
                yield event
        except AgentError as exc:
            self._wire.log_failure(_CHAT, exc)
            for event in state.fail(exc):
                yield event

    async def check(self) -> str:
        # Transport failures raise: "(no /models)" is only for a server that did answer.
        reply = await self._wire.fetch("GET", "/models")
        if reply.status == 404:
            return "OpenAI-compatible endpoint (no /models)"
        self._wire.raise_for(reply, "models")
        body = reply.json()
        models = body.get("data") if isinstance(body, dict) else None
        if not isinstance(models, list):
            return "OpenAI-compatible endpoint (reachable)"
        return f"OpenAI-compatible endpoint, {len(models)} model{'' if len(models) == 1 else 's'}"

    # --- internals -------------------------------------------------------------------------------

    def _chat_body(self, request: AgentRequest) -> dict[str, Any]:
        return {
            "model": self._config.model,
            "messages": build_messages(
                self._config.system_prompt, request.history, request.text, self.history_limits
            ),
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def _events(
        self, response: httpx.Response, state: _StreamState
    ) -> AsyncGenerator[AgentEvent, None]:
        async for sse in iter_sse(response):
            for event in self._handle(sse, state):
                if isinstance(event, Failed):  # an error object or finish_reason in the stream
                    self._wire.log_failure(f"{_CHAT} stream", event.error)
                yield event
            if state.done:
                return  # after [DONE] or an error: nothing more is read

    def _handle(self, sse: ServerSentEvent, state: _StreamState) -> list[AgentEvent]:
        data = sse.data.strip()
        if sse.event == "ping" or not data:
            return []
        if data == _DONE:
            return state.done_marker()
        obj = parse_json(data)
        if sse.event == "error":
            # Some servers name the event instead of (or besides) sending `{"error": {...}}`.
            if isinstance(obj, dict):
                return state.fail(map_stream_error(obj.get("error") or obj, self._wire.secrets))
            return state.fail(AgentUpstreamError(self._wire.redact(excerpt(data))))
        if not isinstance(obj, dict):
            raise self._wire.protocol_error(_CHAT, "unreadable chunk", data)
        return state.chunk(obj)

    async def _completion(self, response: httpx.Response, state: _StreamState) -> list[AgentEvent]:
        """A server that ignored `stream: true` and answered one JSON `chat.completion`."""
        body = await read_body(response, limit=_COMPLETION_LIMIT)
        obj = parse_json(body)
        if not isinstance(obj, dict) or not (
            isinstance(obj.get("choices"), list) or "error" in obj
        ):
            content_type = response.headers.get("content-type", "(none)")
            raise self._wire.protocol_error(
                _CHAT, f"expected an event stream, got {content_type}", body
            )
        return state.completion(obj)

    def _http_error(self, reply: Reply) -> AgentError:
        info = error_info(reply.json())
        message = info.message or excerpt(reply.body) or f"HTTP {reply.status}"
        return map_http_error(
            reply.status,
            info,
            self._wire.redact(message),
            retry_after=parse_retry_after(reply.headers),
        )


# Non-streaming completions are one JSON document; this only guards memory.
_COMPLETION_LIMIT: Final = 4 * 1024 * 1024


def _own_headers(config: OpenAIAgentConfig) -> dict[str, str]:
    headers: dict[str, str] = {}
    key = config.api_key.get_secret_value() if config.api_key else ""
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if is_timeweb_host(config.base_url):
        # SPEC A.1: the agent-client OpenAPI document marks `x-proxy-source` required, and the
        # known Timeweb clients send it on /v1/chat/completions and /v1/models too. Other
        # OpenAI-compatible servers get no unexplained header.
        headers["x-proxy-source"] = TIMEWEB_PROXY_SOURCE
    return headers


def is_timeweb_host(url: str) -> bool:
    """True for `timeweb.cloud` and its subdomains (`agent.timeweb.cloud`, `api.timeweb.cloud`)."""
    try:
        host = httpx.URL(url).host.lower().rstrip(".")
    except httpx.InvalidURL:
        return False
    return host == _TIMEWEB_DOMAIN or host.endswith("." + _TIMEWEB_DOMAIN)


# --- history -------------------------------------------------------------------------------------

_HISTORY_ROLES: Final = frozenset({"user", "assistant"})


def trim_history(history: Sequence[ChatTurn], limits: HistoryLimits) -> list[ChatTurn]:
    """The newest whole turns (a user message and its answers) that fit both limits.

    Turns are dropped oldest first and whole, so the model never sees an answer without its
    question. A limit of 0 means no history at all. Roles other than user/assistant are not
    history (a system prompt comes from the configuration) and are dropped.
    """
    if limits.max_turns <= 0 or limits.max_chars <= 0:
        return []
    turns = _group_turns(t for t in history if t.role in _HISTORY_ROLES)
    kept: list[list[ChatTurn]] = []
    chars = 0
    for turn in reversed(turns[-limits.max_turns :]):
        size = sum(len(t.content) for t in turn)
        if chars + size > limits.max_chars:
            break  # everything older is dropped too: the history stays contiguous
        kept.append(turn)
        chars += size
    return [message for turn in reversed(kept) for message in turn]


def _group_turns(history: Iterable[ChatTurn]) -> list[list[ChatTurn]]:
    """Each user message opens a turn; the answers after it belong to it."""
    turns: list[list[ChatTurn]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def build_messages(
    system_prompt: str | None,
    history: Sequence[ChatTurn],
    text: str,
    limits: HistoryLimits,
) -> list[dict[str, str]]:
    """`messages`: the system prompt first (when set), the trimmed history, the new message."""
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": t.role, "content": t.content} for t in trim_history(history, limits))
    messages.append({"role": "user", "content": text})  # never trimmed
    return messages


# --- errors --------------------------------------------------------------------------------------

# Error bodies are read by `http.error_info` (shared with Timeweb's native route); `ErrorInfo` and
# `error_info` stay importable from here.
_QUOTA_CODES: Final = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit"})
_RATE_CODES: Final = frozenset(
    {"rate_limit_exceeded", "rate_limit_error", "too_many_requests", "requests", "tokens"}
)
_CONTEXT_CODES: Final = frozenset({"context_length_exceeded", "string_above_max_length"})
_QUOTA_WORDING: Final = re.compile(
    r"insufficient[_ ]quota|exceeded your current quota|quota exceeded", re.I
)
_RATE_WORDING: Final = re.compile(r"rate[ _-]?limit|too many requests", re.I)


def _is_quota(info: ErrorInfo, message: str) -> bool:
    return bool({info.code, info.type} & _QUOTA_CODES) or bool(_QUOTA_WORDING.search(message))


def _is_rate(info: ErrorInfo, message: str) -> bool:
    return bool({info.code, info.type} & _RATE_CODES) or bool(_RATE_WORDING.search(message))


def map_http_error(
    status: int, info: ErrorInfo, message: str, *, retry_after: float | None = None
) -> AgentError:
    """An error answered before the stream.

    | status / code or type                               | error              |
    |-----------------------------------------------------|--------------------|
    | 401                                                 | AgentAuthError     |
    | `context_length_exceeded` (any status)              | AgentBadRequest    |
    | `insufficient_quota` (OpenAI sends it with 429), 402| AgentQuotaExceeded |
    | 429, rate-limit codes or wording                    | AgentRateLimited   |
    | 403                                                 | AgentAuthError     |
    | 404                                                 | AgentNotFound      |
    | 5xx                                                 | AgentUnavailable   |
    | 400, other 4xx                                      | AgentBadRequest    |
    """
    code = info.label
    if status == 401:
        return AgentAuthError(message, status=status, code=code)
    if {info.code, info.type} & _CONTEXT_CODES:
        return AgentBadRequest(message, status=status, code=code)
    if 400 <= status < 500 and _is_quota(info, message):
        return AgentQuotaExceeded(message, status=status, code=code)
    if status == 429 or (400 <= status < 500 and _is_rate(info, message)):
        return AgentRateLimited(message, status=status, code=code, retry_after=retry_after)
    return error_for_status(status, message, code=code, retry_after=retry_after)


def map_stream_error(error: object, secrets: Iterable[str] = ()) -> AgentError:
    """An `{"error": {...}}` object inside the stream (or in a 200 JSON body).

    Quota codes or wording -> AgentQuotaExceeded; rate-limit ones (or a 429 `code`) ->
    AgentRateLimited; anything else is the model provider failing: AgentUpstreamError.
    """
    info = error_info({"error": error})
    message = redact(info.message or excerpt(str(error)) or "error in the stream", secrets)
    code = info.label
    if _is_quota(info, message):
        return AgentQuotaExceeded(message, code=code)
    if info.code == "429" or _is_rate(info, message):
        return AgentRateLimited(message, code=code)
    return AgentUpstreamError(message, code=code)


# --- finish reasons and usage --------------------------------------------------------------------

_FINISH_REASONS: Final[Mapping[str, FinishReason]] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "lenght": FinishReason.LENGTH,  # Timeweb's documented spelling (SPEC A.2)
    "max_tokens": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    # A tool call ends the model's turn; the agent platform runs tools itself, so for the bot
    # the answer it got is complete.
    "tool_calls": FinishReason.STOP,
    "function_call": FinishReason.STOP,
}


def finish_reason_from(name: str | None) -> FinishReason:
    """The FinishReason of a wire value; missing and unknown values count as a complete answer.

    The caller checks for `UPSTREAM_ERROR_REASON` first: that one is a failure, not a reason.
    """
    if not name:
        return FinishReason.STOP
    return _FINISH_REASONS.get(name.strip().lower(), FinishReason.STOP)


def usage_from(value: object) -> Usage | None:
    """OpenAI's `usage`; None also when it holds no counts, so that an empty `usage` in a later
    chunk never replaces the counts already seen."""
    usage = token_usage(value, "prompt_tokens", "completion_tokens", "total_tokens")
    return None if usage == Usage() else usage


# --- the stream state machine --------------------------------------------------------------------


class _StreamState:
    """Turns completion chunks into AgentEvents, keeping the stream contract of base.py."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.done = False
        self._secrets = secrets  # error objects quote provider messages, which may quote keys
        self._started = False
        self._message_id: str | None = None
        self._finish: str | None = None  # the last finish_reason seen
        self._usage: Usage | None = None
        # Models served without a reasoning parser write `<think>...</think>` into the content.
        self._thinking = ThinkingSplitter()

    def chunk(self, obj: dict[str, Any]) -> list[AgentEvent]:
        if obj.get("error"):
            return self.fail(map_stream_error(obj["error"], self._secrets))
        events = self._start(obj)
        self._usage = usage_from(obj.get("usage")) or self._usage
        choice = _first_choice(obj)
        if choice is not None:
            delta = choice.get("delta")
            events.extend(self._content(delta if isinstance(delta, dict) else {}))
            self._note_finish(choice.get("finish_reason"))
        return events

    def completion(self, obj: dict[str, Any]) -> list[AgentEvent]:
        """A whole non-streaming `chat.completion` (or an error object) as events."""
        events = self.chunk({**obj, "choices": []})  # ids, usage, a possible error
        if self.done:
            return events
        choice = _first_choice(obj)
        if choice is not None:
            message = choice.get("message")
            events.extend(self._content(message if isinstance(message, dict) else {}))
            self._note_finish(choice.get("finish_reason"))
        return events + self.done_marker()

    def done_marker(self) -> list[AgentEvent]:
        """`data: [DONE]`: a normal end, with or without a finish_reason before it."""
        if self.done:
            return []
        if self._finish == UPSTREAM_ERROR_REASON:
            return self.fail(AgentUpstreamError("the model reported finish_reason error"))
        self.done = True
        events: list[AgentEvent] = list(self._thinking.flush())
        events.append(
            Finished(
                message_id=self._message_id,
                conversation=None,  # nothing to continue: the bot keeps the history
                finish_reason=finish_reason_from(self._finish),
                usage=self._usage,
            )
        )
        return events

    def end_of_body(self) -> list[AgentEvent]:
        """EOF: complete if a finish_reason arrived (no [DONE] needed), else the stream was cut."""
        if self.done:
            return []
        if self._finish is None:
            raise AgentStreamCut("the stream ended without [DONE] or a finish_reason")
        return self.done_marker()

    def fail(self, error: AgentError) -> list[AgentEvent]:
        """Flush text held back by the reasoning splitter, then fail: the partial text stays."""
        if self.done:
            return []
        self.done = True
        # Text is only ever fed after Started, so whatever the splitter releases follows it.
        return [*self._thinking.flush(), Failed(error)]

    def _start(self, obj: Mapping[str, Any]) -> list[AgentEvent]:
        chunk_id = obj.get("id")
        if self._message_id is None and isinstance(chunk_id, str) and chunk_id:
            self._message_id = chunk_id
        if self._started:
            return []
        self._started = True
        # No conversation ref: an OpenAI-compatible server has nothing to continue.
        return [Started(message_id=self._message_id, conversation=None)]

    def _content(self, delta: Mapping[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        # Some servers send the same thinking as both fields: take one, never both.
        reasoning = _text_of(delta.get("reasoning_content")) or _text_of(delta.get("reasoning"))
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        events.extend(self._thinking.feed(_text_of(delta.get("content"))))
        return events

    def _note_finish(self, value: object) -> None:
        if isinstance(value, str) and value:
            self._finish = value.strip().lower()


def _first_choice(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The choice with index 0 (the bot asks for one; a missing index counts as 0)."""
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return None
    return next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)


def _text_of(value: object) -> str:
    """Content as a string; content-part lists (`[{"type": "text", "text": ...}]`) joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part["text"]
            for part in value
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
