"""A programmable fake of an OpenAI-compatible Chat Completions server (SPEC.md §A.3).

Use it as an `httpx.MockTransport` handler: `FakeOpenAI().transport()`. By default it lives
under `/v1`; pass `base_path="/api/v1/cloud-ai/agents/<id>/v1"` to stand in for Timeweb's
per-agent compatible endpoint. What it reproduces:
- `POST {base}/chat/completions` with `"stream": true`: OpenAI's framing, `data: {chunk}` lines
  (first delta `{"role": "assistant", "content": ""}`), optional `reasoning_content` chunks
  before the text, a finish_reason chunk, with `stream_options.include_usage` a last chunk with
  `"choices": []` and `usage` (and `"usage": null` in the others), then `data: [DONE]`.
  Without `stream` it answers one `chat.completion` JSON.
- It keeps no history: `received` holds the `messages` of every chat request, so tests check
  what the client sent (system prompt, trimmed history, the new message).
- `Authorization: Bearer <api_key>` when a key is configured (401 `invalid_api_key` otherwise).
- `GET {base}/models`, or 404 with `models_endpoint=False`.
- Failures: an HTTP error before the stream (`http_status`/`http_body`, `fail_next`), an
  `{"error": {...}}` chunk after N chunks, a body cut mid-chunk (no finish, no [DONE]), a
  missing [DONE] or finish_reason, and a per-chunk delay for timing and silence tests.
Every request is recorded in `calls`, with the Authorization value hidden; every streamed
answer in `runs` (how many chunks went out, whether the client closed it early).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_MODEL = "deepseek-v3.2"
SERVER_ERROR: Mapping[str, Any] = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}


@dataclass
class Completion:
    """How the fake answers one message. `chunks=None` echoes "Echo: <message>" word by word."""

    chunks: Sequence[str] | None = None
    reasoning: Sequence[str] = ()  # thinking chunks, streamed before the text
    reasoning_field: str = "reasoning_content"  # or "reasoning" (OpenRouter, newer vLLM)
    delay: float = 0.0  # before each chunk after the first
    first_delay: float = 0.0  # before the first chunk (the headers go out at once)
    finish_reason: str | None = "stop"  # None: no chunk carries a finish_reason
    send_usage: bool = True  # when the request asked for it (stream_options.include_usage)
    send_done: bool = True  # the final `data: [DONE]`
    # An `{"error": ...}` chunk after this many text chunks; the stream then ends.
    error_after: int | None = None
    error: Mapping[str, Any] = field(default_factory=lambda: dict(SERVER_ERROR))
    # The body ends after this many text chunks, in the middle of the next one.
    cut_after: int | None = None
    # Fail before the stream: this status with this body (a dict is JSON, a str is text).
    http_status: int | None = None
    http_body: Mapping[str, Any] | str | None = None


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    json: Any
    # Lower-cased header names; the Authorization value is replaced by "<present>".
    headers: dict[str, str]


@dataclass
class FakeRun:
    """One streamed answer."""

    id: str
    text: str = ""
    chunks_sent: int = 0
    completed: bool = False  # the body was sent to its end
    closed_early: bool = False  # the client closed the stream before the end (a "stop")


class FakeOpenAI:
    """The fake server. Call it with an `httpx.Request`; it returns an `httpx.Response`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_path: str = "/v1",
        models: Sequence[str] = (DEFAULT_MODEL,),
        models_endpoint: bool = True,
        scripts: Mapping[str, Completion] | None = None,
        default: Completion | None = None,
    ) -> None:
        self.api_key = api_key
        self.base_path = base_path.rstrip("/")
        self.models = tuple(models)
        self.models_endpoint = models_endpoint
        self.scripts: dict[str, Completion] = dict(scripts or {})
        self.default = default or Completion()
        self.calls: list[RecordedCall] = []
        self.received: list[list[dict[str, Any]]] = []
        self.runs: list[FakeRun] = []
        self._failures: list[httpx.Response] = []

    # --- the test-facing API ---------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def fail_next(self, status: int, body: Mapping[str, Any] | str, *, times: int = 1) -> None:
        """The next `times` chat requests get this error instead of an answer."""
        self._failures.extend(_body_response(status, body) for _ in range(times))

    def script_for(self, message: str) -> Completion:
        return self.scripts.get(message, self.default)

    # --- dispatch --------------------------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self._record(request)
        route = request.url.path.removeprefix(self.base_path)
        if route == request.url.path or route not in ("/chat/completions", "/models"):
            return _error(404, "invalid_request_error", None, "Not found")
        if self.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return _error(
                401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."
            )
        if route == "/models":
            if request.method != "GET" or not self.models_endpoint:
                return _error(404, "invalid_request_error", None, "Not found")
            return _json(200, {"object": "list", "data": [_model(m) for m in self.models]})
        if request.method != "POST":
            return _error(405, "invalid_request_error", None, "Method Not Allowed")
        return self._chat(request)

    def _record(self, request: httpx.Request) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "<present>"
        self.calls.append(
            RecordedCall(request.method, request.url.path, _json_body(request), headers)
        )

    # --- chat ------------------------------------------------------------------------------------

    def _chat(self, request: httpx.Request) -> httpx.Response:
        body = _json_body(request)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _error(
                400, "invalid_request_error", None, "'messages' must be a non-empty array"
            )
        assert isinstance(body, dict)
        self.received.append(messages)
        if self._failures:
            return self._failures.pop(0)
        question = _last_user_text(messages)
        script = self.script_for(question)
        if script.http_status is not None:
            return _body_response(script.http_status, script.http_body or {})
        model = str(body.get("model") or DEFAULT_MODEL)
        chunks = _chunks_for(script, question)
        usage = _usage(messages, chunks)
        if not body.get("stream"):
            return _json(200, _completion(model, script, chunks, usage))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        run = FakeRun(id=f"chatcmpl-{uuid.uuid4().hex[:24]}")
        self.runs.append(run)
        events = _Stream(run, model, script, chunks, usage if include_usage else None)
        return httpx.Response(
            200,
            headers={"Content-Type": "text/event-stream; charset=utf-8"},
            stream=_RunStream(events.body(), run),
        )


class _Stream:
    """The SSE body of one streamed answer."""

    def __init__(
        self,
        run: FakeRun,
        model: str,
        script: Completion,
        chunks: Sequence[str],
        usage: dict[str, int] | None,
    ) -> None:
        self.run, self.model, self.script, self.chunks = run, model, script, chunks
        self.usage = usage
        self.created = int(time.time())

    async def body(self) -> AsyncGenerator[bytes, None]:
        script = self.script
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        yield self._chunk({"role": "assistant", "content": ""})
        for piece in script.reasoning:
            await self._pause()
            yield self._chunk({script.reasoning_field: piece})
        for index, piece in enumerate(self.chunks):
            if index or script.reasoning:
                await self._pause()
            if script.cut_after is not None and index >= script.cut_after:
                data = self._chunk({"content": piece})
                yield data[: len(data) // 2]
                return
            if script.error_after is not None and index >= script.error_after:
                yield _sse({"error": dict(script.error)})
                return
            self.run.text += piece
            self.run.chunks_sent += 1
            yield self._chunk({"content": piece})
        if script.error_after is not None and script.error_after >= len(self.chunks):
            yield _sse({"error": dict(script.error)})
            return
        # Complete once the ending is on its way: a client stops reading at [DONE].
        self.run.completed = True
        for tail in self._ending():
            yield tail

    async def _pause(self) -> None:
        if self.script.delay:
            await asyncio.sleep(self.script.delay)

    def _ending(self) -> list[bytes]:
        tail: list[bytes] = []
        if self.script.finish_reason is not None:
            tail.append(self._chunk({}, finish_reason=self.script.finish_reason))
        if self.usage is not None and self.script.send_usage:
            tail.append(_sse({**self._envelope(), "choices": [], "usage": self.usage}))
        if self.script.send_done:
            tail.append(b"data: [DONE]\n\n")
        return tail

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self.run.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason}],
        }
        if self.usage is not None:
            payload["usage"] = None  # OpenAI: null in every chunk but the last
        return _sse(payload)


class _RunStream(httpx.AsyncByteStream):
    def __init__(self, body: AsyncGenerator[bytes, None], run: FakeRun) -> None:
        self._body = body
        self._run = run

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            yield chunk

    async def aclose(self) -> None:
        # The client went away: for an OpenAI-compatible server that is the only "stop".
        if not self._run.completed:
            self._run.closed_early = True
        await self._body.aclose()


# --- helpers -------------------------------------------------------------------------------------


def _sse(payload: Mapping[str, Any]) -> bytes:
    # OpenAI's framing: compact JSON, raw UTF-8.
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _chunks_for(script: Completion, question: str) -> list[str]:
    if script.chunks is not None:
        return list(script.chunks)
    words = question.split()
    return ["Echo: ", *(f"{w} " for w in words[:-1]), *words[-1:]]


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def _usage(messages: Sequence[Any], chunks: Sequence[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    completion = max(1, len(chunks))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(
    model: str, script: Completion, chunks: Sequence[str], usage: dict[str, int]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(chunks)}
    if script.reasoning:
        message[script.reasoning_field] = "".join(script.reasoning)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": script.finish_reason}],
        "usage": usage,
    }


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}


def _json(status: int, payload: Any) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(payload, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json"},
    )


def _error(status: int, kind: str, code: str | None, message: str) -> httpx.Response:
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content) if request.content else None
    except ValueError:
        return None


def _body_response(status: int, body: Mapping[str, Any] | str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers={"Content-Type": "text/plain"})
    return _json(status, dict(body))
