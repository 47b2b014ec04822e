"""A programmable fake of Timeweb Cloud AI's native agent API, as SPEC.md §A describes it.

Use it as an `httpx.MockTransport` handler: `FakeTimeweb().transport()`. What it reproduces:
- `POST /api/v1/cloud-ai/agents/{access id}/call` with `{"message", "parent_message_id"?}`:
  one JSON answer `{"message", "id", "response_id", "finish_reason"}` with fresh uuids; no
  streaming. The history is kept server-side: every answer remembers the message it continued
  from, so `thread()` shows what the agent "saw", and any earlier answer id can be continued
  from (branching).
- `GET /api/v1/cloud-ai/agents/{access id}/v1/models` (what clients use as a health check).
- Agents are addressed by access id (an unknown one gives 404 "Agent not found"); an agent with
  a `token` has a private API and answers 401 without `Authorization: Bearer <token>`.
- Scripted answers per message (or an echo), any `finish_reason` including the documented
  misspelling `lenght`, a JSON null, an object, or none at all; errors before the answer.
Unverified guesses, marked as such in SPEC.md: error bodies use the management API's
`BaseError` shape `{status_code, error_code, message, response_id}`, and an unknown
`parent_message_id` gives 404 "Parent message not found" (`unknown_parent="new_chat"` instead
starts a new chat).
Every request is recorded in `calls`, with the Authorization value hidden.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

AGENTS_PATH = "/api/v1/cloud-ai/agents"
DEFAULT_ACCESS_ID = "5b1f6c8e-2d4a-4e0b-9c7d-1a2b3c4d5e6f"
DEFAULT_MODELS = ("deepseek-v3.2",)
# Marks a finish_reason that is left out of the answer entirely (the types-of-api sample).
OMIT: Any = object()


@dataclass
class Script:
    """How the fake answers one message. `message=None` echoes: "Echo: <message>"."""

    message: str | None = None
    # A string ("stop", "lenght", "content_filter", "error"), None (JSON null), a dict, or OMIT.
    finish_reason: Any = "stop"
    # Seconds before the body. The headers go out at once, so over MockTransport the client's
    # silence timeout bounds the wait as it does over a real network.
    delay: float = 0.0
    # Fail instead of answering: this status with this body (a dict is JSON, a str is text).
    http_status: int | None = None
    http_body: Mapping[str, Any] | str | None = None


@dataclass
class FakeAgent:
    access_id: str = DEFAULT_ACCESS_ID
    token: str | None = None  # None: a public API, no token needed
    scripts: dict[str, Script] = field(default_factory=dict)
    default_script: Script = field(default_factory=Script)
    models: tuple[str, ...] = DEFAULT_MODELS

    def script_for(self, message: str) -> Script:
        return self.scripts.get(message, self.default_script)


@dataclass
class FakeMessage:
    """One exchange the agent stored: the answer's `id`, and what it continued from."""

    id: str
    response_id: str
    access_id: str
    question: str
    answer: str
    parent_message_id: str | None


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    json: Any
    # Lower-cased header names; the Authorization value is replaced by "<present>".
    headers: dict[str, str]


class FakeTimeweb:
    """The fake server. Call it with an `httpx.Request`; it returns an `httpx.Response`."""

    def __init__(
        self,
        *agents: FakeAgent,
        require_proxy_source: bool = False,
        unknown_parent: Literal["error", "new_chat"] = "error",
    ) -> None:
        self.agents: dict[str, FakeAgent] = {a.access_id: a for a in (agents or (FakeAgent(),))}
        self.require_proxy_source = require_proxy_source
        self.unknown_parent = unknown_parent
        self.calls: list[RecordedCall] = []
        self.messages: dict[str, FakeMessage] = {}
        self._failures: list[httpx.Response] = []
        self._routes = re.compile(
            re.escape(AGENTS_PATH) + r"/(?P<agent>[^/]+)(?P<route>/call|/v1/models)"
        )

    # --- the test-facing API ---------------------------------------------------------------------

    @property
    def agent(self) -> FakeAgent:
        """The first (usually only) agent."""
        return next(iter(self.agents.values()))

    def add_agent(self, agent: FakeAgent) -> FakeAgent:
        self.agents[agent.access_id] = agent
        return agent

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def fail_next(self, status: int, body: Mapping[str, Any] | str, *, times: int = 1) -> None:
        """The next `times` /call requests get this error instead of an answer."""
        self._failures.extend(_body_response(status, body) for _ in range(times))

    def thread(self, message_id: str) -> list[FakeMessage]:
        """The exchanges the agent had in mind for this answer, oldest first, itself last."""
        chain: list[FakeMessage] = []
        current = self.messages.get(message_id)
        while current is not None:
            chain.append(current)
            parent = current.parent_message_id
            current = self.messages.get(parent) if parent else None
        return chain[::-1]

    def continued_from(self) -> list[str | None]:
        """The `parent_message_id` of every /call, in order (None: a new chat)."""
        return [
            c.json.get("parent_message_id") if isinstance(c.json, dict) else None
            for c in self.calls
            if c.method == "POST" and c.path.endswith("/call")
        ]

    # --- dispatch --------------------------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self._record(request)
        match = self._routes.fullmatch(request.url.path)
        if match is None:
            return _error(404, "not_found", "Route not found")
        expected = "POST" if match["route"] == "/call" else "GET"
        if request.method != expected:
            return _error(405, "method_not_allowed", "Method Not Allowed")
        agent = self.agents.get(match["agent"])
        if agent is None:
            return _error(404, "not_found", "Agent not found")
        refused = self._refuse(agent, request)
        if refused is not None:
            return refused
        if match["route"] == "/v1/models":
            return _json(200, _models(agent))
        return await self._call(agent, request)

    def _record(self, request: httpx.Request) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "<present>"
        self.calls.append(
            RecordedCall(request.method, request.url.path, _json_body(request), headers)
        )

    def _refuse(self, agent: FakeAgent, request: httpx.Request) -> httpx.Response | None:
        if agent.token is not None and request.headers.get("authorization") != (
            f"Bearer {agent.token}"
        ):
            return _error(401, "unauthorized", "Unauthorized")
        if self.require_proxy_source and not request.headers.get("x-proxy-source"):
            return _error(400, "bad_request", "x-proxy-source header is required")
        return None

    # --- /call -----------------------------------------------------------------------------------

    async def _call(self, agent: FakeAgent, request: httpx.Request) -> httpx.Response:
        body = _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return _error(400, "bad_request", "message must be a string")
        if self._failures:
            return self._failures.pop(0)
        parent = body.get("parent_message_id")
        if parent is not None and not self._continues(agent, parent):
            if self.unknown_parent == "error":
                return _error(404, "not_found", "Parent message not found")
            parent = None
        script = agent.script_for(body["message"])
        if script.http_status is not None:
            return _body_response(script.http_status, script.http_body or {})
        message = self._store(agent, body["message"], script, parent)
        payload: dict[str, Any] = {
            "message": message.answer,
            "id": message.id,
            "response_id": message.response_id,
        }
        if script.finish_reason is not OMIT:
            payload["finish_reason"] = script.finish_reason
        return _json(200, payload, delay=script.delay)

    def _continues(self, agent: FakeAgent, parent: object) -> bool:
        """Only this agent's own earlier answers can be continued from."""
        found = self.messages.get(parent) if isinstance(parent, str) else None
        return found is not None and found.access_id == agent.access_id

    def _store(
        self, agent: FakeAgent, question: str, script: Script, parent: str | None
    ) -> FakeMessage:
        answer = script.message if script.message is not None else f"Echo: {question}"
        message = FakeMessage(
            id=str(uuid.uuid4()),
            response_id=str(uuid.uuid4()),
            access_id=agent.access_id,
            question=question,
            answer=answer,
            parent_message_id=parent,
        )
        self.messages[message.id] = message
        return message


# --- helpers -------------------------------------------------------------------------------------


class _DelayedBody(httpx.AsyncByteStream):
    def __init__(self, content: bytes, delay: float) -> None:
        self._content = content
        self._delay = delay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._delay:
            await asyncio.sleep(self._delay)
        yield self._content


def _json(status: int, payload: Any, *, delay: float = 0.0) -> httpx.Response:
    content = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if not delay:
        return httpx.Response(status, content=content, headers=headers)
    return httpx.Response(status, headers=headers, stream=_DelayedBody(content, delay))


def _error(status: int, code: str, message: str) -> httpx.Response:
    # The management API's BaseError (SPEC A.2 ⚠️: the agent service may differ).
    return _json(
        status,
        {
            "status_code": status,
            "error_code": code,
            "message": message,
            "response_id": str(uuid.uuid4()),
        },
    )


def _models(agent: FakeAgent) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "owned_by": "timeweb"} for m in agent.models],
    }


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content) if request.content else None
    except ValueError:
        return None


def _body_response(status: int, body: Mapping[str, Any] | str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers={"Content-Type": "text/plain"})
    return _json(status, dict(body))
