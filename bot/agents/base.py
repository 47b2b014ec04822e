"""What every agent platform adapter speaks: the request, the events, the errors, the capabilities.

An adapter turns one platform's wire protocol into a stream of `AgentEvent`s. Everything
platform-specific (URL-encoded SSE, `lenght`, `[ERROR]` lines, pings, gateway cuts) ends inside
the adapter; the rest of the bot only ever sees the types below.

Stream contract, which every adapter keeps:
- `stream()` never raises `AgentError`: a failure before or during the answer is yielded as the
  last event, `Failed(error)`, so the consumer keeps whatever text already arrived.
- `Started` comes before the first text when the platform tells ids early (Dify does in every
  event); it carries the conversation ref so a cut-short answer still keeps its conversation.
- A normal end is exactly one `Finished`, and it is the last event.
- Text is delivered as `TextDelta` (append) or `TextReplace` (the whole answer so far is
  replaced, e.g. Dify's output moderation). Reasoning ("thinking") text never mixes with it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable


class FinishReason(StrEnum):
    STOP = "stop"  # the answer is complete
    LENGTH = "length"  # the agent's own token limit cut it
    CONTENT_FILTER = "content_filter"  # the model provider filtered it
    STOPPED = "stopped"  # the user stopped it


class Rating(StrEnum):
    LIKE = "like"
    DISLIKE = "dislike"


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One exchange, for platforms where the bot keeps the history itself."""

    role: str  # "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class AgentRequest:
    text: str
    # A stable, platform-visible identity of whoever the conversation belongs to, e.g. "tg-42".
    user: str
    # The opaque conversation ref from the previous answer's Started/Finished; None starts anew.
    conversation: str | None = None
    # Continue from this earlier agent message instead of the latest one (reply-to branching).
    parent_message_id: str | None = None
    # Earlier turns, for platforms that keep no history server-side.
    history: tuple[ChatTurn, ...] = ()


@dataclass(frozen=True, slots=True)
class Started:
    task_id: str | None = None
    message_id: str | None = None
    conversation: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class TextReplace:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Sources:
    items: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    message_id: str | None = None
    conversation: str | None = None
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    error: AgentError


AgentEvent = Started | TextDelta | TextReplace | ReasoningDelta | Sources | Finished | Failed


# --- errors ------------------------------------------------------------------------------------


class AgentError(Exception):
    """A failure talking to an agent. `detail` is for logs; users see a text chosen by `kind`.

    `detail` must never contain a secret: adapters put status codes, platform error codes and
    the platform's own message there, never request headers.
    """

    kind: ClassVar[str] = "agent_error"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code

    def __str__(self) -> str:
        parts = [self.kind]
        if self.status is not None:
            parts.append(f"http {self.status}")
        if self.code:
            parts.append(self.code)
        return f"{' '.join(parts)}: {self.detail}"


class AgentUnavailable(AgentError):
    """Could not connect, or the platform answered 5xx."""

    kind = "unavailable"


class AgentTimeout(AgentError):
    """The agent went silent for longer than its silence timeout."""

    kind = "timeout"


class AgentAuthError(AgentError):
    """401/403: the configured key or token is wrong, or the app's API is disabled."""

    kind = "auth"


class AgentRateLimited(AgentError):
    kind = "rate_limited"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, status=status, code=code)
        self.retry_after = retry_after


class AgentQuotaExceeded(AgentError):
    """The agent's usage limit or token package is used up."""

    kind = "quota"


class AgentBadRequest(AgentError):
    """The platform rejected the request (app misconfigured, invalid parameter)."""

    kind = "bad_request"


class AgentNotFound(AgentError):
    """The agent or app itself does not exist at the configured address."""

    kind = "not_found"


class ConversationNotFound(AgentError):
    """The stored conversation is unknown to the platform; a new one must be started."""

    kind = "conversation_not_found"


class AgentUpstreamError(AgentError):
    """The platform reached its model provider and that failed (Dify `error` event)."""

    kind = "upstream"


class AgentStreamCut(AgentError):
    """The stream ended without its end marker (e.g. Olares' gateway cuts streams at 30 s)."""

    kind = "stream_cut"


class AgentProtocolError(AgentError):
    """The platform answered something this adapter cannot read."""

    kind = "protocol"


# --- the client protocol and its optional capabilities -----------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerRef:
    """What identifies one earlier answer to the platform (for feedback and suggestions)."""

    message_id: str
    user: str
    conversation: str | None = None


@runtime_checkable
class AgentClient(Protocol):
    name: str
    title: str
    platform: str

    def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        """Open one answer. Closing the iterator (aclose / task cancel) closes the connection."""
        ...

    async def check(self) -> str:
        """Reach the agent without asking it anything; return a one-line description.

        Raises AgentError when the agent cannot be reached or rejects the credentials.
        """
        ...


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    max_turns: int
    max_chars: int


@runtime_checkable
class KeepsNoHistory(Protocol):
    """The platform remembers nothing between requests (OpenAI-compatible endpoints): the bot
    stores the turns itself and sends them in `AgentRequest.history`, newest last, trimmed to
    these limits."""

    history_limits: HistoryLimits


@runtime_checkable
class SupportsBranching(Protocol):
    """The platform can continue from any earlier answer: `AgentRequest.parent_message_id`
    (the platform's id of that answer) takes precedence over the conversation's latest one."""

    branching: bool


@runtime_checkable
class SupportsStop(Protocol):
    async def stop(self, task_id: str, user: str) -> None:
        """Ask the platform to stop generating. The bot stops reading either way."""
        ...


@runtime_checkable
class SupportsFeedback(Protocol):
    # Whether a rating can be withdrawn (rating None). Chaindesk's enum has no "clear".
    feedback_clearable: bool

    async def feedback(self, answer: AnswerRef, rating: Rating | None) -> None: ...


@runtime_checkable
class SupportsSuggestions(Protocol):
    async def suggestions(self, answer: AnswerRef) -> list[str]:
        """Follow-up questions; an empty list when the app has the feature off."""
        ...


@runtime_checkable
class SupportsStatistics(Protocol):
    """The platform's own usage statistics (Dify console): endpoint name -> rows."""

    async def statistics(
        self, start: datetime, end: datetime
    ) -> dict[str, list[dict[str, Any]]]: ...


@dataclass(slots=True)
class AnswerAccumulator:
    """Folds a stream of events into the answer so far: shared by the bot and `relaygram ask`."""

    text: str = ""
    reasoning: str = ""
    sources: tuple[Source, ...] = ()
    started: Started | None = None
    finished: Finished | None = None
    error: AgentError | None = None
    usage: Usage | None = None

    def apply(self, event: AgentEvent) -> None:
        match event:
            case Started():
                self.started = event
            case TextDelta(text=text):
                self.text += text
            case TextReplace(text=text):
                self.text = text
            case ReasoningDelta(text=text):
                self.reasoning += text
            case Sources(items=items):
                self.sources = items
            case Finished():
                self.finished = event
                self.usage = event.usage
            case Failed(error=error):
                self.error = error

    @property
    def message_id(self) -> str | None:
        if self.finished and self.finished.message_id:
            return self.finished.message_id
        return self.started.message_id if self.started else None

    @property
    def conversation(self) -> str | None:
        if self.finished and self.finished.conversation:
            return self.finished.conversation
        return self.started.conversation if self.started else None
