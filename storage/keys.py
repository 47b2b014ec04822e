"""The one place that knows relaygram's Redis key names.

Every key is ``{namespace}:v1:{kind}:{scope.key}[:{suffix}]`` where ``scope.key`` is
``{bot_id}:{chat_id}:{thread_id or 0}``. The ``v1`` segment versions the *layout* of the key
space: an incompatible change to what a key holds gets a new segment (``v2``) instead of
reinterpreting old keys. The payload inside a key carries its own schema version (see
``redis_store``), so compatible changes to a record never need a new key layout.

The agent name is always the last segment of a key that has one (conversation, history, stats),
so it may contain ``:`` without two (scope, agent) pairs ever sharing a key. Keys that belong to
a bot rather than a chat (rate budgets, stats) use ``{bot_id}`` where others use ``scope.key``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.base import ChatScope

LAYOUT_VERSION = "v1"

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds key names under one namespace (one per deployment; tests use a unique one)."""

    namespace: str = "relaygram"

    def __post_init__(self) -> None:
        if not self.namespace:
            raise ValueError("KeySpace namespace must not be empty")

    @property
    def prefix(self) -> str:
        """The common beginning of every key in this key space, ending with ``:``."""
        return f"{self.namespace}:{LAYOUT_VERSION}:"

    @property
    def match_all(self) -> str:
        """A SCAN MATCH pattern for every key of this key space (glob characters escaped)."""
        return _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "*"

    def conversation(self, scope: ChatScope, agent: str) -> str:
        """The conversation ref of one agent in one chat scope."""
        return f"{self.prefix}conversation:{scope.key}:{agent}"

    def answer(self, scope: ChatScope, message_id: int) -> str:
        """The answer record indexed by one of the Telegram message ids it occupies."""
        return f"{self.prefix}answer:{scope.key}:{message_id}"

    def latest_answer(self, scope: ChatScope, agent: str) -> str:
        """The first message id of an agent's latest answer in a scope (agent name last)."""
        return f"{self.prefix}latest:{scope.key}:{agent}"

    def feedback(self, scope: ChatScope, message_id: int) -> str:
        """The ratings (hash: user id -> rating) of the answer whose message id is given."""
        return f"{self.prefix}feedback:{scope.key}:{message_id}"

    def run(self, scope: ChatScope) -> str:
        """The marker of the answer currently being generated in a chat scope."""
        return f"{self.prefix}run:{scope.key}"

    def history(self, scope: ChatScope, agent: str) -> str:
        """The turns the bot keeps itself for one agent in one chat scope (a list)."""
        return f"{self.prefix}history:{scope.key}:{agent}"

    def chat_prefs(self, scope: ChatScope) -> str:
        """The preferences chosen for one chat scope (a hash: agent, mode, language)."""
        return f"{self.prefix}prefs:{scope.key}"

    def notice(self, bot_id: int, kind: str, subject: int) -> str:
        """That a one-time notice of `kind` was given to `subject` (a user or chat id)."""
        return f"{self.prefix}notice:{bot_id}:{kind}:{subject}"

    def bot_budget(self, bot_id: int) -> str:
        """The bot-wide Telegram calls of the last second (a sorted set scored by wall time)."""
        return f"{self.prefix}budget:{bot_id}:calls"

    def rate(self, bot_id: int, user_id: int) -> str:
        """One user's recent messages to one bot (a sorted set scored by time)."""
        return f"{self.prefix}rate:{bot_id}:{user_id}"

    def stats_answers(self, bot_id: int, agent: str) -> str:
        """One agent's recent answer samples in one bot (a sorted set scored by time)."""
        return f"{self.prefix}stats:answers:{bot_id}:{agent}"

    def stats_ratings(self, bot_id: int, agent: str) -> str:
        """One agent's recent rating changes in one bot (a sorted set scored by time)."""
        return f"{self.prefix}stats:ratings:{bot_id}:{agent}"
