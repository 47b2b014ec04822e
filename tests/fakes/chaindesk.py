"""A programmable fake of Chaindesk's agent API, following the sources SPEC.md §B was read from.

Use it as an `httpx.MockTransport` handler (`FakeChaindesk().transport()`). What it reproduces:
- Routes of the Next.js app: `POST /api/agents/{id}/query`, `GET /api/agents/{id}`,
  `POST /api/conversations/eval-answer`; the `/agents/...` aliases exist only with
  `rewrite=True` (api.chaindesk.ai), `/agents/query/{id}` on any host. Anything else gets
  Next.js' HTML 404 page, as a host without the rewrite does.
- Auth: `Authorization: <anything> <key>`; the server reads `split(' ')[1]`. A known key is its
  organisation's session; no key or an unknown one is anonymous: public agents still answer,
  private agents (and datastore filters outside the agent) give `UNAUTHORIZED` (403).
- Errors before the stream (agent unknown, private, usage limit): the status, no Content-Type,
  body `data: [ERROR]<CODE>\\n\\n`; `{"error": "<CODE>"}` JSON for non-streaming requests.
- Streams: headers at once, then after `first_delay` of silence (no pings exist) one `answer`
  event per delta, `encodeURIComponent`-encoded, with OpenAI's empty first and last deltas;
  then the answer is stored, then `endpoint_response` (encoded compact JSON) and `[DONE]`
  under an empty `event:` name. Scripts add 2024 `step` events, a server retry that streams
  the text again, an `[ERROR]` line (not encoded, no `[DONE]`), a cut body, a missing `[DONE]`.
- Conversations live server-side: a missing `conversationId` gets a new cuid, history is the
  last 24 messages of that conversation of that agent; a missing `visitorId` gets a cuid too.
- `eval-answer` stores good/bad per message (404 unknown, 403 private without key, 400 bad body).
Every request is recorded in `calls` (Authorization hidden) and every query in `queries`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

JSONDict = dict[str, Any]

DEFAULT_AGENT_ID = "clq8agent0000l708fake0001"
DEFAULT_API_KEY = "cd-test-org-key"
DEFAULT_DATASTORE = "clq8store0000l708fake0001"
HISTORY_TAKE = 24  # `take: -24` in the Dec 2023 query route

NEXT_404_PAGE = (
    '<!DOCTYPE html><html><head><meta charSet="utf-8"/><title>404: This page could not be '
    'found</title></head><body><div id="__next"><h1 class="next-error-h1">404</h1><div>'
    "<h2>This page could not be found.</h2></div></div></body></html>"
)

_counter = itertools.count()


def cuid() -> str:
    """A cuid-looking id (`c` + 24 lower-case alphanumerics), unique within the process."""
    return f"c{int(time.time()):x}{next(_counter):06x}{uuid.uuid4().hex}"[:25]


def encode_uri_component(text: str) -> str:
    """JavaScript's `encodeURIComponent`: UTF-8, and only `A-Za-z0-9-_.!~*'()` left as is."""
    return quote(text, safe="!~*'()")


def sse(data: str, event: str | None = None) -> bytes:
    """One event as `streamData` writes it (`packages/lib/stream-data.ts`)."""
    payload = data if data == "[DONE]" else encode_uri_component(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {payload}\n\n".encode("ascii")


def js_json(value: Any) -> str:
    """`JSON.stringify`: compact, non-ASCII kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Script:
    """How the fake answers one query. `chunks=None` echoes "Echo: <query>" word by word."""

    chunks: Sequence[str] | None = None
    delay: float = 0.0  # before each chunk after the first
    first_delay: float = 0.0  # retrieval: silence before the first event (no pings exist)
    empty_deltas: bool = True  # OpenAI's role-only first and finish-only last deltas
    sources: Sequence[Mapping[str, Any]] = ()
    steps: Sequence[str] = ()  # 2024 `step` events ("Searching the web for ...") before the text
    # pRetry: after this many chunks the completion fails and re-runs, streaming all the text
    # again; endpoint_response holds it once.
    repeat_after: int | None = None
    # An `[ERROR]<message>` line after this many chunks; nothing is stored, no [DONE].
    error_after: int | None = None
    error_message: str = "429 Rate limit reached for requests"
    # The body ends after this many chunks, in the middle of the next event.
    cut_after: int | None = None
    no_done: bool = False  # the body ends right after endpoint_response


@dataclass
class FakeAgent:
    id: str = DEFAULT_AGENT_ID
    name: str = "Fake docs agent"
    private: bool = False
    # Chaindesk API keys belong to an organisation; this agent's organisation has this key.
    org_key: str = DEFAULT_API_KEY
    datastore_ids: Sequence[str] = (DEFAULT_DATASTORE,)
    query_limit: int | None = None  # the organisation's quota: then 402 USAGE_LIMIT
    queries: int = 0
    scripts: dict[str, Script] = field(default_factory=dict)
    default_script: Script = field(default_factory=Script)

    def script_for(self, query: str) -> Script:
        return self.scripts.get(query, self.default_script)


@dataclass
class FakeMessage:
    id: str
    conversation_id: str
    agent_id: str
    sender: str  # "human" | "agent"
    text: str
    eval: str | None = None


@dataclass
class FakeConversation:
    id: str
    agent_id: str
    visitor_id: str
    messages: list[str] = field(default_factory=list)


@dataclass
class QueryRecord:
    """One query that reached an agent: what it sent, what the server used, how it ended."""

    agent_id: str
    path: str
    sent_conversation_id: str | None
    conversation_id: str
    sent_visitor_id: str | None
    visitor_id: str
    history: int  # messages of the conversation loaded as history
    body: JSONDict
    outcome: str = "running"  # running | done | error | cut | aborted
    message_id: str | None = None  # the stored answer, once stored

    @property
    def new_conversation(self) -> bool:
        return self.sent_conversation_id is None


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    json: Any
    # Lower-cased header names; the Authorization value is replaced by "<present>".
    headers: dict[str, str]

    @property
    def authorized(self) -> bool:
        return "authorization" in self.headers


def _json(status: int, payload: Any) -> httpx.Response:
    return httpx.Response(
        status,
        content=js_json(payload).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


def api_error(code: str, *, streaming: bool, status: int | None = None) -> httpx.Response:
    """`respond()`'s error answer: no Content-Type when streaming (SPEC B.5)."""
    status = status or _STATUS[code]
    if streaming:
        return httpx.Response(status, content=f"data: [ERROR]{code}\n\n".encode())
    return _json(status, {"error": code})


_STATUS = {
    "UNAUTHORIZED": 403,
    "USAGE_LIMIT": 402,
    "NOT_FOUND": 404,
    "INVALID_REQUEST": 400,
    "RATE_LIMIT": 429,
}


def next_404() -> httpx.Response:
    return httpx.Response(
        404, text=NEXT_404_PAGE, headers={"Content-Type": "text/html; charset=utf-8"}
    )


Handler = Callable[[httpx.Request, "re.Match[str]"], Awaitable[httpx.Response]]


class FakeChaindesk:
    """The fake server. Call it with an `httpx.Request`; it returns an `httpx.Response`."""

    def __init__(self, *agents: FakeAgent, rewrite: bool = True) -> None:
        self.agents: dict[str, FakeAgent] = {a.id: a for a in (agents or (FakeAgent(),))}
        self.rewrite = rewrite
        self.calls: list[RecordedCall] = []
        self.queries: list[QueryRecord] = []
        self.conversations: dict[str, FakeConversation] = {}
        self.messages: dict[str, FakeMessage] = {}
        self._failures: list[httpx.Response] = []
        agent = r"(?P<agent>[^/]+)"
        routes: list[tuple[str, str, Handler, bool]] = [
            ("POST", rf"/api/agents/{agent}/query", self._query, False),
            ("POST", rf"/agents/{agent}/query", self._query, True),
            ("POST", rf"/agents/query/{agent}", self._query, False),  # rewritten on any host
            ("GET", rf"/api/agents/{agent}", self._get_agent, False),
            ("GET", rf"/agents/{agent}", self._get_agent, True),
            ("POST", r"/api/conversations/eval-answer", self._eval_answer, False),
        ]
        self._routes = [(m, re.compile(p), h, needs) for m, p, h, needs in routes]

    # --- the test-facing API ---------------------------------------------------------------------

    @property
    def agent(self) -> FakeAgent:
        """The first (usually only) agent."""
        return next(iter(self.agents.values()))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def fail_next(self, response: httpx.Response, *, times: int = 1) -> None:
        """The next `times` queries that pass the checks get this answer instead."""
        self._failures.extend([response] * times)

    def evals(self) -> dict[str, str | None]:
        return {m.id: m.eval for m in self.messages.values() if m.sender == "agent"}

    def history(self, conversation_id: str) -> list[tuple[str, str]]:
        conversation = self.conversations[conversation_id]
        return [(self.messages[m].sender, self.messages[m].text) for m in conversation.messages]

    def calls_to(self, method: str, path: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method and c.path == path]

    # --- dispatch --------------------------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self._record(request)
        path = request.url.path
        for method, pattern, handler, needs_rewrite in self._routes:
            match = pattern.fullmatch(path)
            if match is None or (needs_rewrite and not self.rewrite):
                continue
            if method != request.method:
                return httpx.Response(405, text=f"Method {request.method} Not Allowed")
            return await handler(request, match)
        return next_404()

    def _record(self, request: httpx.Request) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "<present>"
        self.calls.append(
            RecordedCall(request.method, request.url.path, _json_body(request), headers)
        )

    def _session(self, request: httpx.Request) -> str | None:
        """The organisation key of the caller, or None (anonymous), as `handleGetSession` does."""
        parts = request.headers.get("authorization", "").split(" ")
        key = parts[1] if len(parts) > 1 else ""
        return key if any(a.org_key == key for a in self.agents.values()) else None

    def _refused(self, agent: FakeAgent, request: httpx.Request) -> bool:
        return agent.private and self._session(request) != agent.org_key

    # --- query -----------------------------------------------------------------------------------

    async def _query(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        body = _json_body(request)
        body = body if isinstance(body, dict) else {}
        streaming = bool(body.get("streaming"))
        agent = self.agents.get(match["agent"])
        if agent is None:
            return api_error("NOT_FOUND", streaming=streaming)
        if self._refused(agent, request):
            return api_error("UNAUTHORIZED", streaming=streaming)
        filters = body.get("filters") or {}
        if any(d not in agent.datastore_ids for d in filters.get("datastore_ids") or []):
            return api_error("UNAUTHORIZED", streaming=streaming)
        if agent.query_limit is not None and agent.queries >= agent.query_limit:
            return api_error("USAGE_LIMIT", streaming=streaming)
        if self._failures:
            return self._failures.pop(0)
        agent.queries += 1
        record = self._record_query(agent, request.url.path, body)
        query = str(body.get("query") or "")
        script = agent.script_for(query)
        run = _Run(self, agent, script, record, query)
        if not streaming:
            return run.blocking()
        return httpx.Response(
            200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                "Connection": "keep-alive",
            },
            stream=_RunStream(run),
        )

    def _record_query(self, agent: FakeAgent, path: str, body: JSONDict) -> QueryRecord:
        sent_conversation = body.get("conversationId") or None
        sent_visitor = body.get("visitorId") or None
        conversation_id = sent_conversation or cuid()
        found = self.conversations.get(conversation_id)
        # History is loaded only from this agent's conversation with that id.
        history = found.messages[-HISTORY_TAKE:] if found and found.agent_id == agent.id else []
        record = QueryRecord(
            agent_id=agent.id,
            path=path,
            sent_conversation_id=sent_conversation,
            conversation_id=conversation_id,
            sent_visitor_id=sent_visitor,
            visitor_id=sent_visitor or cuid(),
            history=len(history),
            body=body,
        )
        self.queries.append(record)
        return record

    def save(self, record: QueryRecord, query: str, answer: str) -> str:
        """`ConversationManager.save()`: upsert the conversation, add both messages."""
        conversation = self.conversations.setdefault(
            record.conversation_id,
            FakeConversation(record.conversation_id, record.agent_id, record.visitor_id),
        )
        conversation.visitor_id = record.visitor_id  # the upsert updates it
        ids = []
        for sender, text in (("human", query), ("agent", answer)):
            message = FakeMessage(cuid(), conversation.id, record.agent_id, sender, text)
            self.messages[message.id] = message
            conversation.messages.append(message.id)
            ids.append(message.id)
        record.message_id = ids[-1]
        return ids[-1]

    # --- agent, feedback -------------------------------------------------------------------------

    async def _get_agent(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        agent = self.agents.get(match["agent"])
        if agent is None:
            return _json(200, None)  # `findUnique` gives null and `respond()` sends it as is
        if self._refused(agent, request):
            return api_error("UNAUTHORIZED", streaming=False)
        return _json(
            200,
            {
                "id": agent.id,
                "name": agent.name,
                "description": "A fake agent",
                "visibility": "private" if agent.private else "public",
                "modelName": "gpt_3_5_turbo",
                "temperature": 0,
                "includeSources": True,
                "tools": [{"type": "datastore", "datastoreId": d} for d in agent.datastore_ids],
            },
        )

    async def _eval_answer(self, request: httpx.Request, _: re.Match[str]) -> httpx.Response:
        body = _json_body(request)
        if not _valid_eval(body):
            return _json(400, {"error": "error invalid request body", "details": "EvalAnswer"})
        message = self.messages.get(body["messageId"])
        if message is None:
            return api_error("NOT_FOUND", streaming=False)
        if self._refused(self.agents[message.agent_id], request):
            return api_error("UNAUTHORIZED", streaming=False)
        message.eval = body["eval"]
        return _json(
            200,
            {
                "id": message.id,
                "text": message.text,
                "from": message.sender,
                "eval": message.eval,
                "conversationId": message.conversation_id,
            },
        )


def _valid_eval(body: object) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("messageId"), str):
        return False
    visitor = body.get("visitorId")
    return body.get("eval") in ("good", "bad") and (visitor is None or isinstance(visitor, str))


# --- one answer ----------------------------------------------------------------------------------


class _Run:
    """Produces one answer, streamed or whole, and stores it when it completes."""

    def __init__(
        self, fake: FakeChaindesk, agent: FakeAgent, script: Script, record: QueryRecord, query: str
    ) -> None:
        self.fake = fake
        self.agent = agent
        self.script = script
        self.record = record
        self.query = query
        self.chunks = _chunks_for(script, query)

    def _response_object(self, message_id: str, answer: str) -> JSONDict:
        return {
            "messageId": message_id,
            "answer": answer,
            "sources": [dict(s) for s in self.script.sources],
            "conversationId": self.record.conversation_id,
            "visitorId": self.record.visitor_id,
        }

    def _store(self) -> tuple[str, str]:
        answer = "".join(self.chunks).strip()  # chat-retrieval trims the answer
        return self.fake.save(self.record, self.query, answer), answer

    def blocking(self) -> httpx.Response:
        message_id, answer = self._store()
        self.record.outcome = "done"
        words = len(answer.split())
        usage = {"completionTokens": words, "promptTokens": 900, "totalTokens": 900 + words}
        return _json(200, {**self._response_object(message_id, answer), "usage": usage})

    async def body(self) -> AsyncGenerator[bytes, None]:
        script = self.script
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        for step in script.steps:
            yield sse(step, "step")
        if script.empty_deltas:
            yield sse("", "answer")
        sent = 0
        passes = 2 if script.repeat_after is not None else 1
        for attempt in range(passes):
            for index, chunk in enumerate(self.chunks):
                if index and script.delay:
                    await asyncio.sleep(script.delay)
                if script.cut_after is not None and sent >= script.cut_after:
                    self.record.outcome = "cut"
                    event = sse(chunk, "answer")
                    yield event[: len(event) // 2]
                    return
                if script.error_after is not None and sent >= script.error_after:
                    self.record.outcome = "error"
                    yield f"data: [ERROR]{script.error_message}\n\n".encode()
                    return
                if (
                    attempt == 0
                    and script.repeat_after is not None
                    and index >= script.repeat_after
                ):
                    break  # the completion failed here; pRetry runs it again from the start
                sent += 1
                yield sse(chunk, "answer")
        if script.empty_deltas:
            yield sse("", "answer")
        if script.error_after is not None and sent >= script.error_after:
            self.record.outcome = "error"
            yield f"data: [ERROR]{script.error_message}\n\n".encode()
            return
        message_id, answer = self._store()
        self.record.outcome = "done"
        yield sse(js_json(self._response_object(message_id, answer)), "endpoint_response")
        if not script.no_done:
            yield sse("[DONE]", "")


class _RunStream(httpx.AsyncByteStream):
    def __init__(self, run: _Run) -> None:
        self._run = run
        self._body = run.body()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            yield chunk

    async def aclose(self) -> None:
        # The client hung up: Chaindesk aborts the model call and stores nothing (SPEC B.6).
        if self._run.record.outcome == "running":
            self._run.record.outcome = "aborted"
        await self._body.aclose()


# --- helpers -------------------------------------------------------------------------------------


def _chunks_for(script: Script, query: str) -> list[str]:
    if script.chunks is not None:
        return list(script.chunks)
    words = query.split()
    return ["Echo: ", *(f"{w} " for w in words[:-1]), *words[-1:]]


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content) if request.content else None
    except ValueError:
        return request.content.decode("utf-8", errors="replace")
