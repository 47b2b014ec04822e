"""The shapes of relaygram's shared state and the small interfaces that keep it.

This package imports nothing from `bot` or `handlers`: it knows chats, agents by name and opaque
strings, never platforms or Telegram objects.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        """Index the record under every Telegram message id it occupies, and make it the
        latest answer of its agent in this scope, atomically."""
        ...

    async def get(self, scope: ChatScope, message_id: int) -> AnswerRecord | None: ...

    async def latest(self, scope: ChatScope, agent: str) -> int | None:
        """The first Telegram message id of the agent's latest answer in this scope."""
        ...


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


HISTORY_ROLES: tuple[str, ...] = ("user", "assistant")
"""The roles of a turn the bot keeps in `HistoryStore` (OpenAI chat roles, minus "system")."""

CHAT_MODES: tuple[str, ...] = ("mention", "all")
"""When the bot answers in a group: only when mentioned or replied to, or to every message."""

OUTCOMES: tuple[str, ...] = ("ok", "error", "stopped")
"""How an answer ended, as recorded by `StatsStore.record_answer`."""


@dataclass(frozen=True, slots=True)
class ChatPrefs:
    """What operators and users chose for one chat scope; None means "the default"."""

    agent: str | None = None  # the agent serving the chat (a name from the agents file)
    mode: str | None = None  # one of CHAT_MODES, for groups
    language: str | None = None  # the interface language, e.g. "en", "ru", "zh"


@dataclass(frozen=True, slots=True)
class AgentStats:
    """One agent's answers and ratings over a time window (what /stats shows an operator).

    `answers` counts every recorded answer, whatever its outcome; `errors` and `stopped` are
    the part of them that failed or that a user stopped. `likes` and `dislikes` are the net
    ratings given in the window (a rating given before the window and withdrawn inside it
    cancels against the window's ratings, never below zero). `like_ratio` is
    likes / (likes + dislikes), None when that is 0. The medians are over the window's
    answers that have the value (an answer that failed before any text has no first-text
    time); None when none has.
    """

    answers: int = 0
    errors: int = 0
    stopped: int = 0
    likes: int = 0
    dislikes: int = 0
    like_ratio: float | None = None
    median_first_text_s: float | None = None
    median_total_s: float | None = None


class HistoryStore(Protocol):
    """The turns of a conversation the bot keeps itself, per (chat scope, agent).

    For agents whose platform keeps no history (OpenAI-compatible endpoints). Turns are
    ``(role, content)`` pairs, role one of `HISTORY_ROLES`.
    """

    async def get(self, scope: ChatScope, agent: str) -> list[tuple[str, str]]:
        """The kept turns, oldest first (empty when there are none)."""
        ...

    async def append(
        self, scope: ChatScope, agent: str, turns: Sequence[tuple[str, str]], keep: int
    ) -> None:
        """Append `turns` in one atomic step, then keep only the newest `keep` turns."""
        ...

    async def clear(self, scope: ChatScope, agent: str) -> None: ...


class ChatPrefsStore(Protocol):
    """The agent, group mode and language chosen per chat scope.

    These never expire: an operator's choice must not silently revert to the default. Setting
    a preference to None removes it (the default applies again).
    """

    async def get(self, scope: ChatScope) -> ChatPrefs: ...

    async def set_agent(self, scope: ChatScope, name: str | None) -> None: ...

    async def set_mode(self, scope: ChatScope, mode: str | None) -> None: ...

    async def set_language(self, scope: ChatScope, language: str | None) -> None: ...


class RateLimiter(Protocol):
    """A per-user message budget of one bot, shared by every replica (a sliding window)."""

    async def hit(self, bot_id: int, user_id: int, limit: int, window: float, now: float) -> float:
        """Count one message if fewer than `limit` were counted in the last `window` seconds.

        Returns 0.0 when the message is allowed (and counted), otherwise the seconds until
        the user may write again (the message is not counted). `now` is the caller's clock in
        seconds (e.g. ``time.time()``); every replica must use the same kind of clock.
        """
        ...


class StatsStore(Protocol):
    """Per-agent answer statistics of one bot, summarised over any window (operator /stats).

    Times (`at`, `since`, `until`) are epoch seconds; durations are seconds.
    """

    async def record_answer(
        self,
        bot_id: int,
        agent: str,
        *,
        at: float,
        first_text_s: float | None,
        total_s: float,
        outcome: str,
    ) -> None:
        """Record one finished answer; `outcome` is one of `OUTCOMES`."""
        ...

    async def record_rating(
        self, bot_id: int, agent: str, *, at: float, old: str | None, new: str | None
    ) -> None:
        """Record a user's rating change of one answer (`old` -> `new`, each a rating or None)."""
        ...

    async def summary(self, bot_id: int, agent: str, *, since: float, until: float) -> AgentStats:
        """The statistics of what was recorded at ``since <= at < until``."""
        ...


class BotBudgetStore(Protocol):
    """The bot-wide Telegram budget shared by every process of one bot: at most `limit` calls
    in any rolling `window` seconds, counted by wall-clock time so every process agrees."""

    async def take(
        self, bot_id: int, now: float, want: int, limit: int, window: float
    ) -> tuple[list[str], float]:
        """Spend up to `want` calls at wall time `now`, atomically for all processes.

        Returns the names of the calls spent and, when fewer than `want`, the wall time at
        which the oldest call in the window leaves it (the earliest moment to ask again).
        """
        ...

    async def postpone(self, bot_id: int, calls: Sequence[str], to: float) -> None:
        """Count these calls from wall time `to` instead: they went out later than taken."""
        ...


class NoticeStore(Protocol):
    """Remembers that a one-time notice was given, so it is given once, not on every message."""

    async def first_time(self, bot_id: int, kind: str, subject: int, ttl: int) -> bool:
        """True the first time for (bot, kind, subject) within `ttl` seconds, then False."""
        ...
