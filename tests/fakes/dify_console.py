"""A programmable fake of Dify's console API, directly or as Olares' gateway serves it.

It is `FakeDify` (tests/fakes/dify.py) with the console's routes: the streaming, the stop
behaviour, conversations and messages are FakeDify's, so both fakes answer alike. What the
console and the gateway add (SPEC.md §C.0-C.2, the live transcripts 41-57):
- `GET /apps/{id}`: the app detail with its `model_config`; `POST /apps/{id}/chat-messages`
  requires `inputs`, `query` and `model_config` (a model the app cannot use is a 400) and has
  no `user`: every request is the one console account, whose conversations they all share.
  Only chat and agent-chat apps can chat (404 `app_not_found` "App mode is not in the
  supported list" otherwise).
- Stop: no body, always success, and it stops any task of the app (one shared account).
- Feedback: `{message_id, rating}`, one admin rating per message; null without a rating is
  Dify's 400 "rating cannot be None when feedback not exists".
- Suggested questions (`{"data": [...]}`, or 403 when the feature is off) and statistics.
- Authentication: `token` (a console Bearer token, Dify's 401 "Invalid token." otherwise) or
  none; `cookie` emulates an SSO edge that redirects requests without its session cookie.
- `gateway=True` plays `beclab/dify-gateway`: apps not created through it give 404
  `app_not_found`, and streams are cut mid-event after `gateway_cut_after` seconds (30, as the
  gateway does) or after `gateway_cut_after_chunks` chunks.
Every request is recorded in `calls`, with the Authorization and Cookie values hidden.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx

from tests.fakes.dify import (
    FakeApp,
    FakeDify,
    FakeTask,
    _body_response,
    _error,
    _json,
    _json_body,
    _Run,
    _success,
)

DEFAULT_APP_ID = "6af20025-7ce9-4768-aa17-ccf15dd7b6d0"
DEFAULT_TOKEN = "console-token-test"
CONSOLE_BASE_PATH = "/console/api"
GATEWAY_BASE_PATH = "/api/controllers/console/api"
GATEWAY_CUT_SECONDS = 30.0
# Who asks, as far as Dify can tell: the console account (behind the gateway, its own).
CONSOLE_ACCOUNT = "console-account"
LOGIN_PAGE = "https://auth.alice.olares.com/?rd=https%3A%2F%2Fagent.alice.olares.com%2F"
CHAT_MODES = frozenset({"chat", "agent-chat"})

_APP_PATH = re.compile(r"/apps/(?P<app>[^/]+)(?:/.*)?")
_STATISTIC_TIME = "%Y-%m-%d %H:%M"


def default_model_config(model: str = "fake-gpt") -> dict[str, Any]:
    """A chat app's configuration in the shape `GET /apps/{id}` returns it (transcript 41)."""
    return {
        "opening_statement": "Hello! I am the fake console app.",
        "suggested_questions": [],
        "suggested_questions_after_answer": {"enabled": True},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False, "voice": "", "language": ""},
        "retriever_resource": {"enabled": True},
        "annotation_reply": {"enabled": False},
        "more_like_this": {"enabled": False},
        "sensitive_word_avoidance": {"enabled": False, "type": "", "configs": []},
        "external_data_tools": [],
        "model": {
            "provider": "openai_api_compatible",
            "name": model,
            "mode": "chat",
            "completion_params": {"temperature": 0.2, "max_tokens": 512, "stop": []},
        },
        "user_input_form": [],
        "dataset_query_variable": "",
        "pre_prompt": "You are a fake assistant.",
        "agent_mode": {"enabled": False, "strategy": "function_call", "tools": []},
        "prompt_type": "simple",
        "chat_prompt_config": {},
        "completion_prompt_config": {},
        "dataset_configs": {"retrieval_model": "multiple", "datasets": {"datasets": []}},
        "file_upload": {"image": {"enabled": False, "number_limits": 3, "detail": "high"}},
        "created_at": 1795353810,
        "updated_at": 1795353810,
    }


@dataclass
class FakeConsoleApp(FakeApp):
    """A console app. FakeDify keys its apps and their records by `api_key`; here that key is
    the app id (set from `app_id`), since the console names apps in the path."""

    app_id: str = DEFAULT_APP_ID
    name: str = "Fake console app"
    # A non-chat kind ("advanced-chat", "workflow", "completion"): the detail reports it and
    # chat is refused. `mode` stays the streaming style of chat and agent-chat apps.
    other_mode: str | None = None
    model_config: dict[str, Any] = field(default_factory=default_model_config)
    # Models the app may use; a chat whose model_config names another one is a 400.
    available_models: frozenset[str] | None = None
    # Created through the gateway (only those are served when the fake plays the gateway).
    registered: bool = True
    # Statistics endpoints that answer 500.
    broken_statistics: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.api_key = self.app_id

    @property
    def console_mode(self) -> str:
        return self.other_mode or self.mode


class FakeDifyConsole(FakeDify):
    """The fake console API. Call it with an `httpx.Request`; it returns an `httpx.Response`."""

    def __init__(
        self,
        *apps: FakeConsoleApp,
        token: str | None = DEFAULT_TOKEN,
        cookie: str | None = None,
        gateway: bool = False,
        gateway_cut_after: float | None = None,
        gateway_cut_after_chunks: int | None = None,
        base_path: str | None = None,
    ) -> None:
        default_path = GATEWAY_BASE_PATH if gateway else CONSOLE_BASE_PATH
        super().__init__(*(apps or (FakeConsoleApp(),)), base_path=base_path or default_path)
        self.token = token
        self.cookie = cookie
        self.gateway = gateway
        self.gateway_cut_after = (
            GATEWAY_CUT_SECONDS if gateway and gateway_cut_after is None else gateway_cut_after
        )
        self.gateway_cut_after_chunks = gateway_cut_after_chunks
        app = r"/apps/(?P<app>[^/]+)"
        self._routes = [
            ("GET", re.compile(app), self._detail),
            ("POST", re.compile(rf"{app}/chat-messages"), self._console_chat),
            ("POST", re.compile(rf"{app}/chat-messages/(?P<task>[^/]+)/stop"), self._stop),
            ("POST", re.compile(rf"{app}/feedbacks"), self._feedback),
            (
                "GET",
                re.compile(rf"{app}/chat-messages/(?P<message>[^/]+)/suggested-questions"),
                self._suggested,
            ),
            ("GET", re.compile(rf"{app}/statistics/(?P<name>[a-z-]+)"), self._statistics),
        ]

    # --- the test-facing API ---------------------------------------------------------------------

    @property
    def console_app(self) -> FakeConsoleApp:
        app = self.app
        assert isinstance(app, FakeConsoleApp)
        return app

    def add_app(self, app: FakeApp) -> FakeApp:
        assert isinstance(app, FakeConsoleApp)
        return super().add_app(app)

    # --- dispatch --------------------------------------------------------------------------------

    def _record(self, request: httpx.Request) -> None:
        super()._record(request)
        headers = self.calls[-1].headers
        if "cookie" in headers:
            headers["cookie"] = "<present>"

    def _authenticate(self, request: httpx.Request) -> FakeApp | httpx.Response:
        """The SSO edge, then the console token (unless the gateway injects it), then the app."""
        if self.cookie is not None and request.headers.get("cookie") != self.cookie:
            return httpx.Response(302, headers={"Location": LOGIN_PAGE})
        if self.token is not None:
            problem = _check_token(request.headers.get("authorization"), self.token)
            if problem is not None:
                return problem
        route = request.url.path[len(self.base_path) :]
        match = _APP_PATH.fullmatch(route)
        app = self.apps.get(match["app"]) if match else None
        if not isinstance(app, FakeConsoleApp) or (self.gateway and not app.registered):
            return _error(404, "app_not_found", "App not found.")
        return app

    # --- the app and chat ------------------------------------------------------------------------

    async def _detail(
        self, app: FakeApp, request: httpx.Request, _: re.Match[str]
    ) -> httpx.Response:
        assert isinstance(app, FakeConsoleApp)
        return _json(
            200,
            {
                "id": app.app_id,
                "name": app.name,
                "description": "a fake console app",
                "mode": app.console_mode,
                "icon_type": "emoji",
                "icon": "\U0001f916",
                "enable_site": True,
                "enable_api": True,
                "model_config": app.model_config,
                "workflow": None if app.other_mode is None else {"id": str(uuid.uuid4())},
                "api_base_url": "http://127.0.0.1:5001/v1",
                "deleted_tools": [],
            },
        )

    async def _console_chat(
        self, app: FakeApp, request: httpx.Request, _: re.Match[str]
    ) -> httpx.Response:
        assert isinstance(app, FakeConsoleApp)
        if app.console_mode not in CHAT_MODES:
            refusal = "App mode is not in the supported list: {'chat', 'agent-chat'}"
            return _error(404, "app_not_found", refusal)
        body = _json_body(request)
        problem = _check_console_chat_body(body, app)
        if problem is not None:
            return problem
        if self._failures:
            return self._failures.pop(0)
        return await self._answer(app, body)

    async def _answer(self, app: FakeConsoleApp, body: Mapping[str, Any]) -> httpx.Response:
        conversation_id = body.get("conversation_id") or ""
        conversation = self._conversation_for(app, CONSOLE_ACCOUNT, conversation_id)
        if conversation is None:
            return _error(404, "not_found", "Conversation Not Exists.")
        script = app.script_for(body["query"])
        if script.http_status is not None:
            return _body_response(script.http_status, script.http_body or {})
        message = self._new_message(app, conversation, CONSOLE_ACCOUNT, body["query"])
        if body.get("response_mode") == "blocking":
            return self._blocking(app, message, script)
        task = FakeTask(str(uuid.uuid4()), app.api_key, CONSOLE_ACCOUNT, message.id)
        self.tasks[task.id] = task
        response = await _Run(self, app, script, task, message, conversation).response()
        return self._through_gateway(response)

    def _through_gateway(self, response: httpx.Response) -> httpx.Response:
        if self.gateway_cut_after is None and self.gateway_cut_after_chunks is None:
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _GatewayCut(
            response.stream, seconds=self.gateway_cut_after, chunks=self.gateway_cut_after_chunks
        )
        return response

    # --- stop, feedback, suggestions, statistics -------------------------------------------------

    async def _stop(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        # One console account for everyone: any task of the app stops; success regardless.
        task = self.tasks.get(match["task"])
        if task is not None and task.app_key == app.api_key:
            task.stop_requested = True
        return _success()

    async def _feedback(
        self, app: FakeApp, request: httpx.Request, _: re.Match[str]
    ) -> httpx.Response:
        body = _json_body(request)
        if not isinstance(body, dict) or "message_id" not in body:
            return _missing("message_id")
        rating = body.get("rating")
        if rating not in ("like", "dislike", None):
            return _error(400, "invalid_param", "rating must be like, dislike or null")
        message = self.messages.get(str(body["message_id"]))
        if message is None or message.app_key != app.api_key:
            return _error(404, "not_found", "Message Not Exists.")
        if rating is None and message.rating is None:
            return _error(400, "invalid_param", "rating cannot be None when feedback not exists")
        message.rating = rating  # the admin rating: one per message
        return _success()

    async def _suggested(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        message = self.messages.get(match["message"])
        if message is None or message.app_key != app.api_key:
            return _error(404, "not_found", "Message not found")
        if app.suggested is None:
            return _error(
                403,
                "app_suggested_questions_after_answer_disabled",
                "Function Suggested questions after answer disabled.",
            )
        return _json(200, {"data": list(app.suggested)})

    async def _statistics(
        self, app: FakeApp, request: httpx.Request, match: re.Match[str]
    ) -> httpx.Response:
        assert isinstance(app, FakeConsoleApp)
        name = match["name"]
        if name not in _STATISTIC_ROWS:
            return _error(404, "not_found", "The requested URL was not found on the server.")
        if name in app.broken_statistics:
            return _error(500, "internal_server_error", "Internal Server Error.")
        window = _window(request.url.params)
        if isinstance(window, httpx.Response):
            return window
        today = date.today()
        count = sum(1 for m in self.messages.values() if m.app_key == app.api_key)
        rows = [] if not count or not window[0] <= today <= window[1] else [_row(name, count)]
        return _json(200, {"data": rows})


# --- the gateway's 30 s cut ----------------------------------------------------------------------


class _GatewayCut(httpx.AsyncByteStream):
    """The gateway copies the body under an http.Client timeout that includes reading it: at
    the deadline the copy stops, whatever Dify still had to send (SPEC.md §C.1). A chunk limit
    cuts the next chunk in half instead, so the stream ends mid-event as in the transcript."""

    def __init__(
        self, inner: httpx.AsyncByteStream, *, seconds: float | None, chunks: int | None
    ) -> None:
        self._inner = inner
        self._seconds = seconds
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = None if self._seconds is None else loop.time() + self._seconds
        pieces = aiter(self._inner)
        sent = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(pieces)
            except (StopAsyncIteration, TimeoutError):
                return
            if self._chunks is not None and sent >= self._chunks:
                yield chunk[: len(chunk) // 2]
                return
            sent += 1
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- helpers -------------------------------------------------------------------------------------


def _check_token(header: str | None, token: str) -> httpx.Response | None:
    """Dify 0.15's console login check (`ext_login.py`), with its wording."""
    if not header:
        return _error(401, "unauthorized", "Invalid Authorization token.")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        message = "Invalid Authorization header format. Expected 'Bearer <api-key>' format."
        return _error(401, "unauthorized", message)
    if value.strip() != token:
        return _error(401, "unauthorized", "Invalid token.")
    return None


def _check_console_chat_body(body: Any, app: FakeConsoleApp) -> httpx.Response | None:
    if not isinstance(body, dict):
        return _error(400, "invalid_param", "Invalid JSON body.")
    for name in ("inputs", "query", "model_config"):
        if name not in body:
            return _missing(name)
    model_config = body["model_config"]
    model = model_config.get("model") if isinstance(model_config, dict) else None
    if not isinstance(model, dict) or not model.get("name"):
        return _error(400, "invalid_param", "model.name is required")
    if app.available_models is not None and model["name"] not in app.available_models:
        return _error(400, "invalid_param", "model.name must be in the specified model list")
    return None


def _missing(name: str) -> httpx.Response:
    # Flask-RESTful's reqparse answer (transcript 28): no status key.
    return _json(
        400,
        {
            "code": "invalid_param",
            "message": "Missing required parameter in the JSON body",
            "params": name,
        },
    )


def _window(params: Mapping[str, str]) -> tuple[date, date] | httpx.Response:
    try:
        start = datetime.strptime(params.get("start", ""), _STATISTIC_TIME)
        end = datetime.strptime(params.get("end", ""), _STATISTIC_TIME)
    except ValueError:
        return _error(400, "invalid_param", "start and end must be 'YYYY-MM-DD HH:MM'")
    return start.date(), end.date()


# Dify 0.15's row shape of each statistic (`api/controllers/console/app/statistic.py`).
_STATISTIC_ROWS: dict[str, tuple[str, ...]] = {
    "daily-conversations": ("conversation_count",),
    "daily-end-users": ("terminal_count",),
    "token-costs": ("token_count", "total_price", "currency"),
    "average-session-interactions": ("interactions",),
    "user-satisfaction-rate": ("rate",),
    "average-response-time": ("latency",),
    "tokens-per-second": ("tps",),
}


def _row(name: str, messages: int) -> dict[str, Any]:
    values: dict[str, Any] = {
        "conversation_count": messages,
        "terminal_count": 1,
        "token_count": 42 * messages,
        "total_price": "0.0042",
        "currency": "USD",
        "interactions": float(messages),
        "rate": 500.0,
        "latency": 1234.5,
        "tps": 25.0,
    }
    return {
        "date": date.today().isoformat(),
        **{key: values[key] for key in _STATISTIC_ROWS[name]},
    }
