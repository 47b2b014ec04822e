"""Dify console API (`/console/api`), directly or behind Olares' gateway (SPEC.md §C.0-C.2, C.7).

Olares' "agent" app exposes `https://agent.<user>.olares.com/api/controllers/console/api`, a Go
proxy (`beclab/dify-gateway`) in front of Dify 0.14/0.15's console API. What that means here:
- Chat runs the app in *debugger* mode with the `model_config` the client sends, so the app's
  configuration is read once from `GET /apps/{id}` and sent back unchanged with every question
  (live transcripts 41 and 42: the GET shape is accepted verbatim by Dify 0.15.3).
- Only `chat` and `agent-chat` apps can be chatted with this way; chatflows cannot.
- Authentication: behind the gateway none (it injects its own console token; an Olares edge
  may want a session cookie, sent as a configured header); directly, a console Bearer token.
- The gateway cuts every stream after 30 s mid-event and serves only apps it created
  (`404 app_not_found` otherwise).
- Every Telegram user shares one Dify account: feedback is one admin rating per message, and
  stop is not scoped to a user. Keeping conversations apart is the bot's job (one
  conversation id per chat).
The event stream and the error bodies are the Service API's; see `dify_stream.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

import httpx

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentError,
    AgentEvent,
    AgentNotFound,
    AgentProtocolError,
    AgentRequest,
    AnswerRef,
    Failed,
    Rating,
)
from bot.agents.dify_stream import DifyWire, dify_http_error, error_fields
from bot.agents.http import Reply
from bot.config import DifyConsoleAgentConfig

logger = logging.getLogger("relaygram.agents.dify_console")

__all__ = ["CHAT_MODES", "STATISTICS", "DifyConsoleClient", "map_console_error"]

# The app modes Dify's console `chat-messages` accepts (`get_app_model(mode=[CHAT, AGENT_CHAT])`).
CHAT_MODES: Final = frozenset({"chat", "agent-chat"})

# `GET /apps/{id}/statistics/<name>`, in the order the Dify console shows them.
STATISTICS: Final = (
    "daily-conversations",
    "daily-end-users",
    "token-costs",
    "average-session-interactions",
    "user-satisfaction-rate",
    "average-response-time",
    "tokens-per-second",
)

# Pre-stream 400 codes that a stale cached model_config can cause (a model or provider removed
# or renamed in the console since it was fetched): worth one refetch of the app's config.
_STALE_CONFIG_CODES: Final = frozenset(
    {
        "invalid_param",
        "app_model_config_broken",
        "provider_not_initialize",
        "model_currently_not_support",
    }
)
_NOT_A_CHAT_APP: Final = (
    "the console chat API serves only chat and agent-chat apps; for a chatflow use platform "
    "'dify' with the app's API key against Dify's own /v1"
)
_NOT_THE_GATEWAYS: Final = (
    "check app_id; behind the Olares gateway only apps created through the gateway "
    "(POST .../apps) are served, not apps created in the Dify UI"
)


def map_console_error(
    status: int, code: str | None, message: str, headers: httpx.Headers
) -> AgentError:
    """Dify's mapping (`map_http_error`) plus what the console route and the gateway add.

    | status / code                                           | error           |
    |---------------------------------------------------------|-----------------|
    | 3xx (an SSO edge sending to its login page)             | AgentAuthError  |
    | 404 `app_not_found` "App mode is not in the supported…" | AgentBadRequest |
    | 404 `app_not_found` otherwise (e.g. not the gateway's)  | AgentNotFound   |
    | anything else                                           | as Dify's       |
    """
    if 300 <= status < 400:
        target = _host(headers.get("location"))
        return AgentAuthError(
            f"redirected to {target}: the entrance wants a login (Olares SSO?); configure a "
            "session cookie header, or use an internal entrance",
            status=status,
        )
    if status == 404 and code == "app_not_found":
        if "mode is not in the supported list" in message.lower():
            return AgentBadRequest(f"{message} ({_NOT_A_CHAT_APP})", status=status, code=code)
        return AgentNotFound(f"{message} ({_NOT_THE_GATEWAYS})", status=status, code=code)
    return dify_http_error(status, code, message, headers)


class DifyConsoleClient:
    """One chat or agent-chat app through Dify's console API. Stop, feedback (one admin rating
    per message, clearable), suggestions, branching and the console's statistics."""

    platform: str = "dify-console"
    feedback_clearable: bool = True
    branching: bool = True  # parent_message_id, console 0.9+

    def __init__(self, config: DifyConsoleAgentConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.title = config.title or config.name
        self._config = config
        self._app = f"/apps/{quote(config.app_id, safe='')}"
        key = config.api_key.get_secret_value() if config.api_key else ""
        self._wire = DifyWire(
            http,
            config,
            # No token behind the gateway: it overwrites Authorization with its own (C.1).
            own_headers={"Authorization": f"Bearer {key}"} if key else {},
            logger=logger,
            map_error=map_console_error,
            cut_detail=(
                "the stream ended without message_end (the Olares gateway cuts streams at 30 s)"
            ),
        )
        self._model_config: dict[str, Any] | None = None
        # One fetch of the app's configuration however many answers start at once.
        self._config_lock = asyncio.Lock()

    # --- AgentClient -----------------------------------------------------------------------------

    async def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        try:
            model_config = await self._current_model_config()
        except AgentError as exc:
            yield Failed(exc)
            return
        events = self._answer(request, model_config)
        try:
            first = await anext(events, None)
            if isinstance(first, Failed) and await self._config_went_stale(
                first.error, model_config
            ):
                # Nothing was shown yet (a pre-stream 400), so asking again is invisible.
                await events.aclose()
                events = self._answer(request, await self._current_model_config())
                first = await anext(events, None)
            if first is not None:
                yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def check(self) -> str:
        """Reads the app (refreshing the cached model_config); fails for non-chat apps."""
        detail = await self._app_detail()
        model_config = self._chat_model_config(detail)
        self._model_config = model_config
        return f"Dify console app {detail.get('name')!r} ({detail.get('mode')})"

    # --- capabilities ----------------------------------------------------------------------------

    async def stop(self, task_id: str, user: str) -> None:
        # No body and no user: the console scopes tasks to the (shared) account. Dify answers
        # success even when nothing stopped (C.2, C.7).
        reply = await self._wire.fetch(
            "POST", f"{self._app}/chat-messages/{quote(task_id, safe='')}/stop"
        )
        self._wire.raise_for(reply, "stop")

    async def feedback(self, answer: AnswerRef, rating: Rating | None) -> None:
        # One admin rating per message, shared by every Telegram user behind the gateway.
        body = {"message_id": answer.message_id, "rating": rating.value if rating else None}
        reply = await self._wire.fetch("POST", f"{self._app}/feedbacks", json=body)
        if rating is None and _already_cleared(reply):
            return
        self._wire.raise_for(reply, "feedbacks")

    async def suggestions(self, answer: AnswerRef) -> list[str]:
        if not self._config.suggestions:
            return []
        message = quote(answer.message_id, safe="")
        reply = await self._wire.fetch(
            "GET", f"{self._app}/chat-messages/{message}/suggested-questions"
        )
        return self._wire.suggestions(reply, "suggested-questions")

    async def statistics(self, start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
        """Each of `STATISTICS` for [start, end]: its `data` rows, e.g. `{"date": "2026-11-22",
        "conversation_count": 3}`. An endpoint that fails is left out (and logged); if all
        fail, the first error is raised, so "unreachable" is not mistaken for "no data".

        Dify reads the minute-precision times in the console account's timezone, so the
        wall-clock digits of `start`/`end` are sent as they are.
        """
        params = {"start": _minute(start), "end": _minute(end)}
        results = await asyncio.gather(*(self._statistic(name, params) for name in STATISTICS))
        found = {
            name: rows
            for name, rows in zip(STATISTICS, results, strict=True)
            if not isinstance(rows, AgentError)
        }
        errors = [r for r in results if isinstance(r, AgentError)]
        if errors and not found:
            raise errors[0]
        return found

    # --- internals -------------------------------------------------------------------------------

    def _answer(
        self, request: AgentRequest, model_config: dict[str, Any]
    ) -> AsyncGenerator[AgentEvent, None]:
        body: dict[str, Any] = {
            "response_mode": "streaming",
            "conversation_id": request.conversation or "",
            "query": request.text,
            "inputs": dict(self._config.inputs),
            # Verbatim: the console runs the app with exactly this configuration.
            "model_config": model_config,
        }
        if request.parent_message_id:
            body["parent_message_id"] = request.parent_message_id
        return self._wire.stream(f"{self._app}/chat-messages", body)

    async def _current_model_config(self) -> dict[str, Any]:
        async with self._config_lock:
            if self._model_config is None:
                self._model_config = self._chat_model_config(await self._app_detail())
            return self._model_config

    async def _config_went_stale(self, error: AgentError, used: Mapping[str, Any]) -> bool:
        """After a pre-stream 400 that a stale config can cause: refetch the config, and say
        whether it changed (then one retry can succeed; otherwise the error stands)."""
        if not isinstance(error, AgentBadRequest) or error.status != 400:
            return False
        if error.code not in _STALE_CONFIG_CODES:
            return False
        async with self._config_lock:
            if self._model_config is used:  # unless another answer refetched it meanwhile
                self._model_config = None
        try:
            fresh = await self._current_model_config()
        except AgentError:
            return False  # logged by the wire; the original error is the one to report
        return fresh != used

    async def _app_detail(self) -> dict[str, Any]:
        reply = await self._wire.fetch("GET", self._app)
        return self._wire.json_object(reply, "app detail")

    def _chat_model_config(self, detail: Mapping[str, Any]) -> dict[str, Any]:
        """The app's model_config, or the reason it cannot be chatted with (logged)."""
        mode = detail.get("mode")
        if mode not in CHAT_MODES:
            message = f"app {self._config.app_id} is a {mode!r} app: {_NOT_A_CHAT_APP}"
            raise self._logged(AgentBadRequest(message))
        model_config = detail.get("model_config")
        if not isinstance(model_config, dict) or not model_config:
            message = f"app {self._config.app_id} detail has no model_config"
            raise self._logged(AgentProtocolError(message))
        return model_config

    def _logged(self, error: AgentError) -> AgentError:
        self._wire.log_failure("app detail", error)
        return error

    async def _statistic(
        self, name: str, params: Mapping[str, str]
    ) -> list[dict[str, Any]] | AgentError:
        what = f"statistics/{name}"
        try:
            reply = await self._wire.fetch("GET", f"{self._app}/{what}", params=params)
            rows = self._wire.data_list(reply, what)
        except AgentError as exc:
            return exc  # already logged by the wire
        return [row for row in rows if isinstance(row, dict)]


def _already_cleared(reply: Reply) -> bool:
    """Clearing a rating that does not exist: Dify's 400, but the wanted state holds (C.2)."""
    _, message = error_fields(reply.body)
    return (
        reply.status == 400
        and message is not None
        and "rating cannot be none when feedback not exists" in message.lower()
    )


def _minute(moment: datetime) -> str:
    # The console's statistics parse `%Y-%m-%d %H:%M` (DatetimeString in statistic.py).
    return moment.strftime("%Y-%m-%d %H:%M")


def _host(url: str | None) -> str:
    """Only the host of a redirect target: its query may carry the original URL."""
    if not url:
        return "another page"
    try:
        return httpx.URL(url).host or "another page"
    except httpx.InvalidURL:
        return "another page"
