"""A programmable fake of the Dify Service API, behaving like the recorded Dify 0.15.3.

Use it as an `httpx.MockTransport` handler (`FakeDify().transport()`), or over real HTTP with
`python -m tests.fakes.dify_server`. What it reproduces (SPEC.md §C.3-C.7, the live transcripts):
- `Authorization: Bearer <app key>`: missing header or unknown key -> 401 as Dify words it.
- `POST /v1/chat-messages`: 0.x framing (`data: ` + `json.dumps`, ASCII escapes, `", "`
  separators), `message` events (`agent_message` + `agent_thought` for agent-chat apps),
  `event: ping` while the "model" is silent, then `message_end` with usage and optional
  `retriever_resources`. Headers are sent only with the first event, as Dify does.
- Conversations belong to (app, user): an unknown, deleted or foreign conversation -> 404
  "Conversation Not Exists.".
- `POST /v1/chat-messages/{task}/stop` always answers success; it ends the running stream only
  for the stream's own user, after `chunks_after_stop` more chunks, with an ordinary
  `message_end` (there is no "stopped" flag).
- Feedback per message (null clears; null without a rating is Dify's 400), suggested questions
  (or 400 "Suggested Questions Is Disabled."), `/info`, `/parameters`, `/meta`, conversations.
- Failures: HTTP status + body before the stream, an `error` event after N chunks, a stream cut
  mid-event without `message_end` (like Olares' gateway), `fail_next()` for one-off errors.
Every request is recorded in `calls`, with the Authorization value hidden.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

JSONDict = dict[str, Any]

DEFAULT_API_KEY = "app-test"
DEFAULT_SUGGESTIONS = ("What else can you do?", "Tell me more", "Give an example")


@dataclass
class Script:
    """How the fake answers one query. `chunks=None` echoes: "Echo: <query>" word by word."""

    chunks: Sequence[str] | None = None
    delay: float = 0.0  # before each chunk after the first
    first_delay: float = 0.0  # before the first event: pings (and the headers) come after it
    retriever_resources: Sequence[Mapping[str, Any]] = ()
    # An `error` event after this many chunks; the stream then ends (no message_end).
    error_after: int | None = None
    error_code: str = "completion_request_error"
    error_status: int = 400
    error_message: str = "[openai_api_compatible] Error: fake upstream failure"
    # The body ends after this many chunks, in the middle of the next event, no message_end.
    cut_after: int | None = None
    # Fail before the stream: this status with this body (a dict is JSON, a str is text/plain).
    http_status: int | None = None
    http_body: Mapping[str, Any] | str | None = None


@dataclass
class FakeApp:
    api_key: str = DEFAULT_API_KEY
    name: str = "Fake chat app"
    mode: Literal["chat", "agent-chat"] = "chat"
    scripts: dict[str, Script] = field(default_factory=dict)
    default_script: Script = field(default_factory=Script)
    # Follow-up questions; None means the feature is off (400 "Suggested Questions Is Disabled.").
    suggested: Sequence[str] | None = DEFAULT_SUGGESTIONS
    chunks_after_stop: int = 1  # Dify lets a couple more chunks through after a stop (C.7)
    ping_interval: float = 10.0

    def script_for(self, query: str) -> Script:
        return self.scripts.get(query, self.default_script)


@dataclass
class FakeMessage:
    id: str
    conversation_id: str
    app_key: str
    user: str
    query: str
    answer: str = ""
    rating: str | None = None


@dataclass
class FakeConversation:
    id: str
    app_key: str
    user: str
    created_at: int
    messages: list[str] = field(default_factory=list)


@dataclass
class FakeTask:
    id: str
    app_key: str
    user: str
    message_id: str
    stop_requested: bool = False
    finished: bool = False
    chunks_sent: int = 0


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    # Lower-cased header names; the Authorization value is replaced by "<present>".
    headers: dict[str, str]

    @property
    def authorized(self) -> bool:
        return "authorization" in self.headers


def _json(status: int, payload: Any) -> httpx.Response:
    # Flask-RESTful's json.dumps defaults, as Dify sends them: ", " separators, ASCII escapes.
    return httpx.Response(
        status,
        content=json.dumps(payload).encode("ascii"),
        headers={"Content-Type": "application/json"},
    )


def _error(status: int, code: str, message: str) -> httpx.Response:
    return _json(status, {"code": code, "message": message, "status": status})


def _success() -> httpx.Response:
    return _json(200, {"result": "success"})


RouteHandler = Callable[[FakeApp, httpx.Request, "re.Match[str]"], Awaitable[httpx.Response]]


class FakeDify:
    """The fake server. Call it with an `httpx.Request`; it returns an `httpx.Response`."""

    def __init__(self, *apps: FakeApp, base_path: str = "/v1") -> None:
        self.apps: dict[str, FakeApp] = {a.api_key: a for a in (apps or (FakeApp(),))}
        self.base_path = base_path.rstrip("/")
        self.calls: list[RecordedCall] = []
        self.conversations: dict[str, FakeConversation] = {}
        self.messages: dict[str, FakeMessage] = {}
        self.tasks: dict[str, FakeTask] = {}
        self._failures: list[httpx.Response] = []
        self._routes: list[tuple[str, re.Pattern[str], RouteHandler]] = [
            ("POST", re.compile(r"/chat-messages"), self._chat),
            ("POST", re.compile(r"/chat-messages/(?P<task>[^/]+)/stop"), self._stop),
            ("POST", re.compile(r"/messages/(?P<message>[^/]+)/feedbacks"), self._feedback),
            ("GET", re.compile(r"/messages/(?P<message>[^/]+)/suggested"), self._suggested),
            ("GET", re.compile(r"/info"), self._info),
            ("GET", re.compile(r"/parameters"), self._parameters),
            ("GET", re.compile(r"/meta"), self._meta),
            ("GET", re.compile(r"/conversations"), self._conversations),
            ("DELETE", re.compile(r"/conversations/(?P<conversation>[^/]+)"), self._delete),
        ]

    # --- the test-facing API ---------------------------------------------------------------------

    @property
    def app(self) -> FakeApp:
        """The first (usually only) app."""
        return next(iter(self.apps.values()))

    def add_app(self, app: FakeApp) -> FakeApp:
        self.apps[app.api_key] = app
        return app

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def fail_next(self, status: int, body: Mapping[str, Any] | str, *, times: int = 1) -> None:
        """The next `times` chat requests get this error instead of an answer."""
        for _ in range(times):
            self._failures.append(_body_response(status, body))

    def ratings(self) -> dict[str, str | None]:
        return {m.id: m.rating for m in self.messages.values()}

    def calls_to(self, method: str, path_suffix: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method and c.path.endswith(path_suffix)]

    def task_of(self, message_id: str) -> FakeTask:
        return next(t for t in self.tasks.values() if t.message_id == message_id)

    # --- dispatch --------------------------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self._record(request)
        path = request.url.path
        if not path.startswith(self.base_path + "/"):
            return _not_found_url()
        route = path[len(self.base_path) :]
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(route)
            if match is None:
                continue
            allowed = True
            if method != request.method:
                continue
            app_or_error = self._authenticate(request)
            if isinstance(app_or_error, httpx.Response):
                return app_or_error
            return await handler(app_or_error, request, match)
        if allowed:
            return _error(405, "method_not_allowed", "The method is not allowed for the URL.")
        return _not_found_url()

    def _record(self, request: httpx.Request) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "<present>"
        try:
            body = json.loads(request.content) if request.content else None
        except ValueError:
            body = request.content.decode("utf-8", errors="replace")
        self.calls.append(
            RecordedCall(request.method, request.url.path, dict(request.url.params), body, headers)
        )

    def _authenticate(self, request: httpx.Request) -> FakeApp | httpx.Response:
        header = request.headers.get("authorization")
        if header is None or not header.startswith("Bearer "):
            return _error(
                401,
                "unauthorized",
                "Authorization header must be provided and start with 'Bearer'",
            )
        app = self.apps.get(header.removeprefix("Bearer ").strip())
        if app is None:
            return _error(401, "unauthorized", "Access token is invalid")
        return app

    # --- chat ------------------------------------------------------------------------------------

    async def _chat(self, app: FakeApp, request: httpx.Request, _: re.Match[str]) -> httpx.Response:
        body = _json_body(request)
        problem = self._check_chat_body(body)
        if problem is not None:
            return problem
        if self._failures:
            return self._failures.pop(0)
        user, query = body["user"], body["query"]
        conversation = self._conversation_for(app, user, body.get("conversation_id") or "")
        if conversation is None:
            return _error(404, "not_found", "Conversation Not Exists.")
        script = app.script_for(query)
        if script.http_status is not None:
            return _body_response(script.http_status, script.http_body or {})
        message = self._new_message(app, conversation, user, query)
        if body.get("response_mode") != "streaming":
            return self._blocking(app, message, script)
        task = FakeTask(str(uuid.uuid4()), app.api_key, user, message.id)
        self.tasks[task.id] = task
        run = _Run(self, app, script, task, message, conversation)
        return await run.response()

    @staticmethod
    def _check_chat_body(body: Any) -> httpx.Response | None:
        if not isinstance(body, dict):
            return _error(400, "invalid_param", "Invalid JSON body.")
        for name in ("inputs", "query"):
            if name not in body:
                # Flask-RESTful's reqparse answer, recorded in transcript 28: no status key.
                return _json(
                    400,
                    {
                        "code": "invalid_param",
                        "message": "Missing required parameter in the JSON body",
                        "params": name,
                    },
                )
        if not body.get("user"):
            return _error(400, "invalid_param", "Arg user must be provided.")
        return None

    def _conversation_for(
        self, app: FakeApp, user: str, conversation_id: str
    ) -> FakeConversation | None:
        if not conversation_id:
            conversation = FakeConversation(
                str(uuid.uuid4()), app.api_key, user, created_at=int(time.time())
            )
            self.conversations[conversation.id] = conversation
            return conversation
        found = self.conversations.get(conversation_id)
        # Unknown, deleted and other users' conversations look the same (C.7).
        if found is None or found.app_key != app.api_key or found.user != user:
            return None
        return found

    def _new_message(
        self, app: FakeApp, conversation: FakeConversation, user: str, query: str
    ) -> FakeMessage:
        message = FakeMessage(str(uuid.uuid4()), conversation.id, app.api_key, user, query)
        self.messages[message.id] = message
        conversation.messages.append(message.id)
        return message

    def _blocking(self, app: FakeApp, message: FakeMessage, script: Script) -> httpx.Response:
        if app.mode == "agent-chat":
            return _error(400, "invalid_param", "Agent Chat App does not support blocking mode")
        message.answer = "".join(_chunks_for(script, message.query))
        return _json(
            200,
            {
                "event": "message",
                "task_id": str(uuid.uuid4()),
                "id": message.id,
                "message_id": message.id,
                "conversation_id": message.conversation_id,
                "mode": app.mode,
                "answer": message.answer,
                "metadata": _metadata(script, message),
                "created_at": int(time.time()),
            },
        )

    # --- stop, feedback, suggestions -------------------------------------------------------------

    async def _stop(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        body = _json_body(request)
        user = body.get("user") if isinstance(body, dict) else None
        if not user:
            return _error(400, "invalid_param", "Arg user must be provided.")
        task = self.tasks.get(match["task"])
        # Only the stream's own end user can stop it; everyone gets "success" (C.7).
        if task is not None and task.app_key == app.api_key and task.user == user:
            task.stop_requested = True
        return _success()

    def _own_message(self, app: FakeApp, message_id: str, user: object) -> FakeMessage | None:
        message = self.messages.get(message_id)
        if message is None or message.app_key != app.api_key or message.user != user:
            return None
        return message

    async def _feedback(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        body = _json_body(request)
        if not isinstance(body, dict) or not body.get("user"):
            return _error(400, "invalid_param", "Arg user must be provided.")
        rating = body.get("rating")
        if rating not in ("like", "dislike", None):
            return _error(400, "invalid_param", "rating must be like, dislike or null")
        message = self._own_message(app, match["message"], body["user"])
        if message is None:
            return _error(404, "not_found", "Message Not Exists.")
        if rating is None and message.rating is None:
            return _error(400, "invalid_param", "rating cannot be None when feedback not exists")
        message.rating = rating
        return _success()

    async def _suggested(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        user = request.url.params.get("user")
        if not user:
            return _error(400, "invalid_param", "Arg user must be provided.")
        if self._own_message(app, match["message"], user) is None:
            return _error(404, "not_found", "Message Not Exists.")
        if app.suggested is None:
            return _error(400, "bad_request", "Suggested Questions Is Disabled.")
        return _json(200, {"result": "success", "data": list(app.suggested)})

    # --- app information and conversations -------------------------------------------------------

    async def _info(self, app: FakeApp, request: httpx.Request, _: re.Match[str]) -> httpx.Response:
        return _json(200, {"name": app.name, "description": "fake", "tags": []})

    async def _parameters(
        self, app: FakeApp, request: httpx.Request, _: re.Match[str]
    ) -> httpx.Response:
        return _json(
            200,
            {
                "opening_statement": "",
                "suggested_questions": [],
                "suggested_questions_after_answer": {"enabled": app.suggested is not None},
                "retriever_resource": {"enabled": True},
                "user_input_form": [],
            },
        )

    async def _meta(self, app: FakeApp, request: httpx.Request, _: re.Match[str]) -> httpx.Response:
        return _json(200, {"tool_icons": {}})

    async def _conversations(
        self, app: FakeApp, request: httpx.Request, _: re.Match[str]
    ) -> httpx.Response:
        user = request.url.params.get("user")
        mine = [
            {"id": c.id, "name": "", "inputs": {}, "status": "normal", "created_at": c.created_at}
            for c in self.conversations.values()
            if c.app_key == app.api_key and c.user == user
        ]
        return _json(200, {"limit": 20, "has_more": False, "data": mine[::-1]})

    async def _delete(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        body = _json_body(request)
        user = body.get("user") if isinstance(body, dict) else None
        found = self.conversations.get(match["conversation"])
        if found is None or found.app_key != app.api_key or found.user != user:
            return _error(404, "not_found", "Conversation Not Exists.")
        del self.conversations[found.id]
        return _success()


# --- one streaming answer ------------------------------------------------------------------------


class _Run:
    """Produces the SSE body of one answer and keeps the fake's records in step with it."""

    def __init__(
        self,
        fake: FakeDify,
        app: FakeApp,
        script: Script,
        task: FakeTask,
        message: FakeMessage,
        conversation: FakeConversation,
    ) -> None:
        self.app, self.script, self.task, self.message = app, script, task, message
        self.conversation = conversation
        self.created_at = int(time.time())
        self._text_event = "agent_message" if app.mode == "agent-chat" else "message"
        self._stop_seen_at: int | None = None

    async def response(self) -> httpx.Response:
        body = self._body()
        # Dify sends the headers together with the first event (C.7), so wait for it.
        first = await anext(body, None)
        stream = _PrefetchedStream(first, body, self.task)
        return httpx.Response(
            200,
            headers={"Content-Type": "text/event-stream; charset=utf-8", "X-Version": "0.15.3"},
            stream=stream,
        )

    async def _body(self) -> AsyncGenerator[bytes, None]:
        async for ping in self._silence(self.script.first_delay):
            yield ping
        if self.app.mode == "agent-chat":
            yield self._event("agent_thought", **self._thought(""))
        for index, chunk in enumerate(_chunks_for(self.script, self.message.query)):
            if index and self.script.delay:
                async for ping in self._silence(self.script.delay):
                    yield ping
            if self._stop_reached():
                break
            if self._due(self.script.cut_after):
                event = self._event(self._text_event, id=self.message.id, answer=chunk)
                yield event[: len(event) // 2]  # cut mid-event, like Olares' gateway
                return
            if self._due(self.script.error_after):
                yield self._error_event()
                return
            yield self._text(chunk)
        if self._due(self.script.error_after) and self._stop_seen_at is None:
            yield self._error_event()
            return
        for event in self._ending():
            yield event

    def _due(self, after: int | None) -> bool:
        return after is not None and self.task.chunks_sent >= after

    def _stop_reached(self) -> bool:
        """True once `chunks_after_stop` chunks went out after the stop request was seen."""
        if not self.task.stop_requested:
            return False
        if self._stop_seen_at is None:
            self._stop_seen_at = self.task.chunks_sent
        return self.task.chunks_sent - self._stop_seen_at >= self.app.chunks_after_stop

    async def _silence(self, seconds: float) -> AsyncIterator[bytes]:
        """Wait like a model that says nothing, with Dify's `event: ping` every interval."""
        remaining = seconds
        while remaining > 0:
            nap = min(remaining, self.app.ping_interval)
            await asyncio.sleep(nap)
            remaining -= nap
            if nap >= self.app.ping_interval:
                yield b"event: ping\n\n"

    def _text(self, chunk: str) -> bytes:
        self.message.answer += chunk
        self.task.chunks_sent += 1
        if self.app.mode == "agent-chat":
            return self._event("agent_message", id=self.message.id, answer=chunk)
        return self._event("message", id=self.message.id, answer=chunk, from_variable_selector=None)

    def _ending(self) -> list[bytes]:
        events: list[bytes] = []
        if self.app.mode == "chat":
            # Dify's chat pipeline ends the text with one empty chunk (see transcript 04).
            events.append(
                self._event("message", id=self.message.id, answer="", from_variable_selector=None)
            )
        else:
            events.append(self._event("agent_thought", **self._thought(self.message.answer)))
        metadata = _metadata(self.script, self.message)
        events.append(self._event("message_end", id=self.message.id, metadata=metadata, files=None))
        return events

    def _thought(self, thought: str) -> JSONDict:
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.message.id)),
            "position": 1,
            "thought": thought,
            "observation": "",
            "tool": "",
            "tool_labels": {},
            "tool_input": "",
            "message_files": [],
        }

    def _envelope(self, kind: str) -> JSONDict:
        return {
            "event": kind,
            "conversation_id": self.conversation.id,
            "message_id": self.message.id,
            "created_at": self.created_at,
        }

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {**self._envelope(kind), "task_id": self.task.id, **fields}
        return _sse(payload)

    def _error_event(self) -> bytes:
        # Error events carry no task_id; key order code, status, message (SPEC C.4).
        payload = {
            **self._envelope("error"),
            "code": self.script.error_code,
            "status": self.script.error_status,
            "message": self.script.error_message,
        }
        return _sse(payload)


class _PrefetchedStream(httpx.AsyncByteStream):
    def __init__(
        self, first: bytes | None, rest: AsyncGenerator[bytes, None], task: FakeTask
    ) -> None:
        self._first = first
        self._rest = rest
        self._task = task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            yield self._first
        async for chunk in self._rest:
            yield chunk
        self._task.finished = True

    async def aclose(self) -> None:
        # Also when the client goes away early. Dify would keep generating in the background;
        # the fake simply stops.
        self._task.finished = True
        await self._rest.aclose()


# --- helpers -------------------------------------------------------------------------------------


def _sse(payload: Mapping[str, Any]) -> bytes:
    # 0.x framing: json.dumps defaults, i.e. ASCII-only with \\uXXXX escapes (SPEC C.4).
    return f"data: {json.dumps(payload)}\n\n".encode("ascii")


def _chunks_for(script: Script, query: str) -> list[str]:
    if script.chunks is not None:
        return list(script.chunks)
    words = query.split()
    return ["Echo: ", *(f"{w} " for w in words[:-1]), *words[-1:]]


def _metadata(script: Script, message: FakeMessage) -> JSONDict:
    prompt, completion = 10 + len(message.query.split()), max(1, len(message.answer.split()))
    metadata: JSONDict = {}
    if script.retriever_resources:
        metadata["retriever_resources"] = [dict(r) for r in script.retriever_resources]
    metadata["usage"] = {
        "prompt_tokens": prompt,
        "prompt_unit_price": "0",
        "prompt_price_unit": "0",
        "prompt_price": "0E-7",
        "completion_tokens": completion,
        "completion_unit_price": "0",
        "completion_price_unit": "0",
        "completion_price": "0E-7",
        "total_tokens": prompt + completion,
        "total_price": "0E-7",
        "currency": "USD",
        "latency": 0.01,
    }
    return metadata


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content) if request.content else None
    except ValueError:
        return None


def _body_response(status: int, body: Mapping[str, Any] | str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers={"Content-Type": "text/plain"})
    return _json(status, dict(body))


def _not_found_url() -> httpx.Response:
    return _error(
        404,
        "not_found",
        "The requested URL was not found on the server. If you entered the URL manually please "
        "check your spelling and try again.",
    )
