"""Timeweb Cloud AI agents, native API: `POST {base}/api/v1/cloud-ai/agents/{access id}/call`.

Wire facts (SPEC.md §A.1-A.2 and Timeweb's native-API page; nothing verified live):
- The path carries the agent's **Access ID**. `Authorization: Bearer <token>` is needed for
  agents with a private API (sent whenever a token is configured); `x-proxy-source` is marked
  required by the agent-client OpenAPI document and sent by every known client.
- Body `{"message": text, "parent_message_id": <id>}`; without `parent_message_id` a new chat
  starts. The history is kept **server-side**, and any earlier message id of the chat continues
  from that point, which is what reply-to branching needs.
- No streaming form exists: one JSON answer `{message, id, response_id, finish_reason}`, so the
  silence timeout covers the whole generation. `finish_reason` is `stop | lenght |
  content_filter | error`, may be missing, and one client types it as an object.
- The error body shape is undocumented: JSON `message`/`error`/`detail` is read when present,
  and the raw body excerpt is logged (redacted).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from functools import partial
from typing import Final
from urllib.parse import quote

import httpx

# Timeweb's OpenAI-compatible route belongs to the same agent service: its finish reasons, error
# bodies and status meanings are read the same way here.
from bot.agents import openai as compat
from bot.agents.base import (
    AgentError,
    AgentEvent,
    AgentNotFound,
    AgentProtocolError,
    AgentRequest,
    AgentUpstreamError,
    ConversationNotFound,
    Failed,
    Finished,
    Started,
    TextDelta,
    Usage,
)
from bot.agents.http import (
    AgentWire,
    ErrorInfo,
    Reply,
    error_info,
    excerpt,
    parse_json,
    parse_retry_after,
)
from bot.agents.openai import UPSTREAM_ERROR_REASON
from bot.config import TimewebAgentConfig

logger = logging.getLogger("relaygram.agents.timeweb")

__all__ = [
    "TimewebAnswer",
    "TimewebClient",
    "call_body",
    "map_http_error",
    "parse_answer",
    "read_finish_reason",
]

AGENTS_PATH: Final = "/api/v1/cloud-ai/agents"


class TimewebClient:
    """One Timeweb agent by its access id. Branching supported; no stop, feedback, suggestions."""

    platform: str = "timeweb"
    # SupportsBranching: `parent_message_id` may name any earlier answer of the chat (A.2).
    branching: bool = True

    def __init__(self, config: TimewebAgentConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.title = config.title or config.name
        self._config = config
        self._wire = AgentWire(
            http,
            config,
            logger=logger,
            map_error=self._http_error,
            own_headers=_own_headers(config),
            base_url=f"{config.base_url}{AGENTS_PATH}/{quote(config.agent_id, safe='')}",
            # The error body format is undocumented (SPEC A.2 ⚠️): its raw excerpt is logged too.
            log_error_bodies=True,
        )

    # --- AgentClient -----------------------------------------------------------------------------

    async def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        parent = request.parent_message_id or request.conversation
        try:
            reply = await self._wire.fetch("POST", "/call", json=call_body(request.text, parent))
            map_error = partial(self._http_error, continued=parent is not None)
            self._wire.raise_for(_embedded_error(reply), "call", map_error)
            answer = self._parse(reply.body)
        except AgentError as exc:
            yield Failed(exc)
            return
        for event in self._events(answer):
            yield event

    async def check(self) -> str:
        # SPEC A.3: clients use the compatible route's model list as a health check; it needs
        # the same access id, token and x-proxy-source as /call and asks the agent nothing.
        reply = await self._wire.fetch("GET", "/v1/models")
        self._wire.raise_for(reply, "models")
        return f"Timeweb agent {self._config.agent_id}"

    # --- internals -------------------------------------------------------------------------------

    def _events(self, answer: TimewebAnswer) -> list[AgentEvent]:
        # The conversation ref is the answer's own `id`: the doc says it continues the chat
        # ("Значение id из ответа можно использовать как parent_message_id"); `response_id`
        # looks like a request/trace id and is only logged (SPEC A.2 ⚠️).
        failed = answer.finish_reason == UPSTREAM_ERROR_REASON
        # A failed generation is not continued from: the next message goes on from the last
        # good answer (the stored ref stays), so a broken exchange does not stay in the context.
        ref = None if failed else answer.id
        if answer.id is None:
            logger.warning(
                "timeweb agent %s: answer without an id (response_id %s): the next message "
                "continues from the previous answer",
                self.name,
                answer.response_id,
            )
        events: list[AgentEvent] = [Started(message_id=answer.id, conversation=ref)]
        if answer.message:
            events.append(TextDelta(answer.message))
        events.append(self._failed(answer) if failed else self._finished(answer))
        return events

    def _failed(self, answer: TimewebAnswer) -> Failed:
        # The doc says to open a support ticket with the response body: the ids go into the
        # detail (they are not secrets) so an operator can quote them.
        error = AgentUpstreamError(
            f"the agent reported finish_reason error (id {answer.id}, response_id "
            f"{answer.response_id})",
            code=UPSTREAM_ERROR_REASON,
        )
        self._wire.log_failure("call", error)
        return Failed(error)

    def _finished(self, answer: TimewebAnswer) -> Finished:
        logger.debug(
            "timeweb agent %s: answer %s (response_id %s) finished (%s)",
            self.name,
            answer.id,
            answer.response_id,
            answer.finish_reason,
        )
        return Finished(
            message_id=answer.id,
            conversation=answer.id,
            finish_reason=compat.finish_reason_from(answer.finish_reason),
            usage=answer.usage,
        )

    def _parse(self, body: bytes) -> TimewebAnswer:
        try:
            return parse_answer(body)
        except AgentProtocolError as exc:
            error = AgentProtocolError(f"{exc.detail}: {self._wire.redact(excerpt(body))}")
            self._wire.log_failure("call", error)
            raise error from None

    def _http_error(self, reply: Reply, *, continued: bool = False) -> AgentError:
        """`continued`: the request named a message to continue from (`parent_message_id`)."""
        info = error_info(reply.json())
        message = self._wire.redact(info.message or excerpt(reply.body) or f"HTTP {reply.status}")
        return map_http_error(
            reply.status,
            info,
            message,
            continued=continued,
            retry_after=parse_retry_after(reply.headers),
        )


def _own_headers(config: TimewebAgentConfig) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    token = config.token.get_secret_value() if config.token else ""
    if token:  # public agents need none (native-API page)
        headers["Authorization"] = f"Bearer {token}"
    if config.proxy_source:
        headers["x-proxy-source"] = config.proxy_source
    return headers


def _embedded_error(reply: Reply) -> Reply:
    """A 200 whose body is an error object (`{status_code, error_code, message}`, no `id`) as
    the error it reports, so an error text is never shown as the agent's answer. The error
    format is undocumented (SPEC A.2 ⚠️); without a usable status it counts as a 502."""
    obj = reply.json() if reply.ok else None
    if not isinstance(obj, dict) or "id" in obj:
        return reply
    if not ({"error", "error_code", "status_code"} & obj.keys()):
        return reply
    status = obj.get("status_code")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status < 600:
        status = 502
    return Reply(status, reply.headers, reply.body)


def call_body(text: str, parent: str | None) -> dict[str, str]:
    """`{"message"}` plus `parent_message_id` (snake_case, SPEC A.2 ⚠️) when continuing."""
    body = {"message": text}
    if parent:
        body["parent_message_id"] = parent
    return body


# --- the answer ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimewebAnswer:
    message: str
    id: str | None
    response_id: str | None
    finish_reason: str | None  # normalised: lower-case text, None when missing or unreadable
    usage: Usage | None = None


def parse_answer(body: bytes | str) -> TimewebAnswer:
    """The `/call` answer, read defensively; AgentProtocolError when it is not one."""
    obj = parse_json(body)
    if not isinstance(obj, dict) or not ({"message", "id"} & obj.keys()):
        raise AgentProtocolError("not a Timeweb answer")
    message = obj.get("message")
    if message is not None and not isinstance(message, str):
        raise AgentProtocolError(f"message is {type(message).__name__}, not text")
    return TimewebAnswer(
        message=message or "",
        id=_id(obj.get("id")),
        response_id=_id(obj.get("response_id")),
        finish_reason=read_finish_reason(obj.get("finish_reason")),
        usage=compat.usage_from(obj.get("usage")),  # not documented; taken if it ever appears
    )


def read_finish_reason(value: object) -> str | None:
    """`finish_reason` as a string, missing, null, or an object (a client types it
    `Record<string, any>`): an object's `type` or `reason` string is used, else None (= stop)."""
    if isinstance(value, dict):
        value = next((value[k] for k in ("type", "reason") if isinstance(value.get(k), str)), None)
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return None


def _id(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


# --- error mapping -------------------------------------------------------------------------------

# Wording of a complaint about the message id continued from (an unknown, foreign or malformed
# parent_message_id). Nothing is documented; a stale stored ref must not block the chat forever.
_PARENT_WORDING: Final = re.compile(
    r"parent[_ ]?message|message[_ ]not[_ ]found|сообщени[ея] не найден", re.I
)


def map_http_error(
    status: int,
    info: ErrorInfo,
    message: str,
    *,
    continued: bool,
    retry_after: float | None = None,
) -> AgentError:
    """An error status of `/call` or `/v1/models` (SPEC A.2; the body shape is unknown).

    | status                                                    | error                |
    |-----------------------------------------------------------|----------------------|
    | 400/404/422 naming the parent message, when continuing    | ConversationNotFound |
    | 404 otherwise ("Agent not found": a bad access id)        | AgentNotFound        |
    | 401                                                       | AgentAuthError       |
    | 402; 4xx with quota codes or wording (exhausted tokens)   | AgentQuotaExceeded   |
    | 429; 4xx with rate-limit codes or wording                 | AgentRateLimited     |
    | 403 otherwise                                             | AgentAuthError       |
    | 5xx                                                       | AgentUnavailable     |
    | other 4xx                                                 | AgentBadRequest      |
    """
    if continued and status in (400, 404, 422) and _PARENT_WORDING.search(message):
        return ConversationNotFound(message, status=status, code=info.label)
    if status == 404:
        return AgentNotFound(f"bad access id? {message}", status=status, code=info.label)
    return compat.map_http_error(status, info, message, retry_after=retry_after)
