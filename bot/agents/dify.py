"""Dify Service API (`https://<dify>/v1`): chat, agent-chat and chatflow apps (SPEC.md §C.3-C.7).

The app API key authenticates, and every call names the end user (`user`), to whom Dify scopes
conversations, stops and feedback. Streaming, error mapping and reasoning splitting are shared
with the console adapter in `dify_stream.py`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import httpx

from bot.agents.base import AgentEvent, AgentRequest, AnswerRef, Rating
from bot.agents.dify_stream import (
    DifyWire,
    ThinkingSplitter,
    map_http_error,
    map_stream_error,
    sources_from_resources,
)
from bot.config import DifyAgentConfig

logger = logging.getLogger("relaygram.agents.dify")

__all__ = [
    "DifyClient",
    "ThinkingSplitter",
    "map_http_error",
    "map_stream_error",
    "sources_from_resources",
]


class DifyClient:
    """One Dify app, reached with its app API key. Stop, feedback and suggestions supported."""

    platform: str = "dify"
    feedback_clearable: bool = True

    def __init__(self, config: DifyAgentConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.title = config.title or config.name
        self._config = config
        self._wire = DifyWire(
            http,
            config,
            own_headers={"Authorization": f"Bearer {config.api_key.get_secret_value()}"},
            logger=logger,
        )

    # --- AgentClient -----------------------------------------------------------------------------

    def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        return self._wire.stream("/chat-messages", self._chat_body(request))

    async def check(self) -> str:
        reply = await self._wire.fetch("GET", "/info")
        if reply.status == 404:  # /info is newer than /parameters; old servers lack it
            reply = await self._wire.fetch("GET", "/parameters")
            self._wire.raise_for(reply, "parameters")
            return "Dify app (reachable, no /info endpoint)"
        name = self._wire.json_object(reply, "info").get("name")
        return f"Dify app {name!r}" if isinstance(name, str) and name else "Dify app"

    # --- capabilities ----------------------------------------------------------------------------

    async def stop(self, task_id: str, user: str) -> None:
        # Dify answers success even when nothing stopped (unknown task, other user): C.7.
        reply = await self._wire.fetch(
            "POST", f"/chat-messages/{quote(task_id, safe='')}/stop", json={"user": user}
        )
        self._wire.raise_for(reply, "stop")

    async def feedback(self, answer: AnswerRef, rating: Rating | None) -> None:
        body = {"rating": rating.value if rating else None, "user": answer.user}
        reply = await self._wire.fetch(
            "POST", f"/messages/{quote(answer.message_id, safe='')}/feedbacks", json=body
        )
        self._wire.raise_for(reply, "feedback")

    async def suggestions(self, answer: AnswerRef) -> list[str]:
        if not self._config.suggestions:
            return []
        reply = await self._wire.fetch(
            "GET",
            f"/messages/{quote(answer.message_id, safe='')}/suggested",
            params={"user": answer.user},
        )
        return self._wire.suggestions(reply, "suggested")

    # --- internals -------------------------------------------------------------------------------

    def _chat_body(self, request: AgentRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "inputs": dict(self._config.inputs),
            "query": request.text,
            "response_mode": "streaming",
            "conversation_id": request.conversation or "",
            "user": request.user,
            "auto_generate_name": True,
        }
        if request.parent_message_id:
            body["parent_message_id"] = request.parent_message_id
        return body
