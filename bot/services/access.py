"""Who may use the bot, how often, and with how long a message (ALLOWED_USERS, ALLOWED_CHATS,
RATE_LIMIT_PER_MINUTE, MAX_MESSAGE_LENGTH). Operators are never limited.

Refusals are polite and given once (per user or chat, per day), so a stranger who keeps writing
does not make the bot spend its flood budget on the same refusal again and again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from enum import Enum

from redis.exceptions import RedisError

from storage import Storage

logger = logging.getLogger("relaygram.access")

REFUSAL_NOTICE_TTL = 24 * 3600


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # not on the allowlists: tell once
    REFUSE_SILENTLY = "refuse_silently"  # not on the allowlists, already told
    RATE_LIMITED = "rate_limited"
    TOO_LONG = "too_long"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    wait_seconds: int = 0  # RATE_LIMITED: when the user may write again


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    operators: frozenset[int] = frozenset()
    allowed_users: frozenset[int] = frozenset()
    allowed_chats: frozenset[int] = frozenset()
    per_minute: int = 20  # 0: no rate limit
    max_length: int = 4000


class AccessService:
    def __init__(self, policy: AccessPolicy, storage: Storage) -> None:
        self.policy = policy
        self._storage = storage

    def is_allowed(self, user_id: int, chat_id: int) -> bool:
        p = self.policy
        if not p.allowed_users and not p.allowed_chats:
            return True
        return user_id in p.operators or user_id in p.allowed_users or chat_id in p.allowed_chats

    async def admit(self, bot_id: int, user_id: int, chat_id: int) -> Decision:
        """May this user use the bot in this chat at all (any update)?"""
        if self.is_allowed(user_id, chat_id):
            return Decision(Verdict.ALLOW)
        subject = chat_id if chat_id < 0 else user_id
        first = await self._storage.notices.first_time(
            bot_id, "refused", subject, REFUSAL_NOTICE_TTL
        )
        logger.info("refused user %s in chat %s (not on the allowlists)", user_id, chat_id)
        return Decision(Verdict.REFUSE if first else Verdict.REFUSE_SILENTLY)

    async def check_question(self, bot_id: int, user_id: int, text: str) -> Decision:
        """May this message go to the agent (length, rate)?"""
        if len(text) > self.policy.max_length:
            return Decision(Verdict.TOO_LONG)
        if self.policy.per_minute <= 0 or user_id in self.policy.operators:
            return Decision(Verdict.ALLOW)
        try:
            wait = await self._storage.rate_limits.hit(
                bot_id, user_id, self.policy.per_minute, 60.0, time.time()
            )
        except RedisError as exc:  # never refuse a user because the limiter is down
            logger.warning("rate limiter unavailable: %s", exc)
            return Decision(Verdict.ALLOW)
        if wait > 0:
            logger.info("user %s is over the rate limit; may write again in %.0fs", user_id, wait)
            return Decision(Verdict.RATE_LIMITED, max(1, math.ceil(wait)))
        return Decision(Verdict.ALLOW)
