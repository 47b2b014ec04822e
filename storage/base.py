"""The shapes of relaygram's shared state and the small interfaces that keep it.

This package imports nothing from `bot` or `handlers`: it knows chats, agents by name and opaque
strings, never platforms or Telegram objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChatScope:
    """One conversation place: a chat of one bot, or one forum topic inside it."""

    bot_id: int
    chat_id: int
    thread_id: int | None = None

    @property
    def key(self) -> str:
        return f"{self.bot_id}:{self.chat_id}:{self.thread_id or 0}"


RATINGS: tuple[str, ...] = ("like", "dislike")
"""The ratings a user can give an answer (what `FeedbackStore.set` accepts besides None)."""


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """What the bot remembers about one answer it sent, for feedback and reply-to branching."""

    agent: str  # agent name from the agents file
    agent_message_id: str | None  # the platform's id of this answer
    conversation: str | None  # the conversation ref right after this answer
    user_id: int  # the Telegram user who asked
    end_user: str  # the identity the platform saw (e.g. "tg-42")
    message_ids: tuple[int, ...]  # the Telegram messages the answer occupies, in order
    suggestions: tuple[str, ...] = ()
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class RunningAnswer:
    """The answer currently being generated in a chat (at most one per scope)."""

    run_id: str
    agent: str
    user_id: int
    end_user: str
    task_id: str | None = None
    replica: str = ""


class ConversationStore(Protocol):
    """The conversation ref per (chat scope, agent): switching agents never mixes them."""

    async def get(self, scope: ChatScope, agent: str) -> str | None: ...

    async def set(self, scope: ChatScope, agent: str, ref: str) -> None: ...

    async def clear(self, scope: ChatScope, agent: str) -> None: ...


class AnswerStore(Protocol):
    async def save(self, scope: ChatScope, record: AnswerRecord) -> None:
        """Index the record under every Telegram message id it occupies, atomically."""
        ...

    async def get(self, scope: ChatScope, message_id: int) -> AnswerRecord | None: ...


class FeedbackStore(Protocol):
    """One rating per (answer message, Telegram user); None means no rating."""

    async def get(self, scope: ChatScope, message_id: int, user_id: int) -> str | None: ...

    async def set(
        self, scope: ChatScope, message_id: int, user_id: int, rating: str | None
    ) -> None: ...

    async def counts(self, scope: ChatScope, message_id: int) -> dict[str, int]:
        """How many users gave each rating to this answer."""
        ...


class RunStore(Protocol):
    """Which answer is running in a chat, visible to every replica (for /stop)."""

    async def start(self, scope: ChatScope, run: RunningAnswer) -> None: ...

    async def update_task(self, scope: ChatScope, run_id: str, task_id: str) -> None: ...

    async def get(self, scope: ChatScope) -> RunningAnswer | None: ...

    async def finish(self, scope: ChatScope, run_id: str) -> None:
        """Forget the run, but only if it is still `run_id` (a newer run is left alone)."""
        ...
