"""👍/👎 on an answer: sent to the platform for that exact message, kept in storage, shown on the
button. Pressing the same choice again takes the rating back (where the platform allows it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import InlineKeyboardMarkup
from redis.exceptions import RedisError

from bot import texts
from bot.agents.base import AgentError, AnswerRef, Rating, SupportsFeedback
from bot.agents.registry import AgentDirectory
from bot.keyboards import answer_keyboard
from bot.services.lanes import Lanes
from bot.streaming.sender import ChatSender, DeliveryFailed
from storage import AnswerRecord, ChatScope, Storage

logger = logging.getLogger("relaygram.feedback")

Acknowledge = Callable[[str], Awaitable[object]]
FindAnswer = Callable[[ChatScope, int], Awaitable[AnswerRecord | None]]


class FeedbackService:
    def __init__(
        self,
        *,
        agents: AgentDirectory,
        storage: Storage,
        sender: ChatSender,
        find_answer: FindAnswer,
    ) -> None:
        self._agents = agents
        self._storage = storage
        self._sender = sender
        self._find_answer = find_answer
        # Presses on one answer are applied one at a time (their counts depend on each other).
        self._lanes = Lanes()
        self._refresh_pending: set[str] = set()

    async def rate(
        self,
        scope: ChatScope,
        message_id: int,
        user_id: int,
        rating: Rating,
        acknowledge: Acknowledge,
    ) -> None:
        """Apply a button press. `acknowledge` gets the short notice for the user at once;
        the button is updated afterwards (that edit may wait for the chat's flood budget).
        """
        key = f"{scope.key}:{message_id}"
        async with self._lanes.hold(key):
            record = await self._apply(scope, message_id, user_id, rating, acknowledge)
        if record is not None:
            await self._refresh_buttons(scope, key, record)

    async def _apply(
        self,
        scope: ChatScope,
        message_id: int,
        user_id: int,
        rating: Rating,
        acknowledge: Acknowledge,
    ) -> AnswerRecord | None:
        """Record the press (and tell the platform); the record when the buttons must change."""
        record = await self._find_answer(scope, message_id)
        if record is None or record.agent_message_id is None:
            await acknowledge(str(texts.FEEDBACK_UNKNOWN))
            return None
        client = self._agents.get(record.agent)
        title = client.title if client else record.agent
        if not isinstance(client, SupportsFeedback):
            await acknowledge(texts.FEEDBACK_UNSUPPORTED.format(agent=title))
            return None
        current = await self._storage.feedback.get(scope, message_id, user_id)
        new = None if current == rating.value else rating
        counts = await self._storage.feedback.counts(scope, message_id)
        after = _recount(counts, current, new.value if new else None)
        # A private chat's rating is the user's own. In a group each person's rating counts
        # once and the platform, which holds one rating per answer, gets the majority's.
        group = scope.chat_id < 0
        verdict = _majority(after) if group else new
        changed = verdict != (_majority(counts) if group else _parse(current))
        if changed and verdict is None and not client.feedback_clearable:
            if not group:
                await acknowledge(texts.FEEDBACK_CANNOT_CLEAR.format(agent=title))
                return None
            changed = False  # the platform keeps the last majority; the counts still change
        if changed:
            ref = AnswerRef(record.agent_message_id, record.end_user, record.conversation)
            try:
                await client.feedback(ref, verdict)
            except AgentError as exc:
                logger.warning("feedback to agent %s failed: %s", record.agent, exc)
                await acknowledge(texts.FEEDBACK_FAILED.format(agent=title))
                return None
        await self._storage.feedback.set(
            scope, message_id, user_id, new.value if new is not None else None
        )
        await self._record(scope, record.agent, current, new)
        logger.info(
            "feedback %s by user %s on agent %s message %s in chat %s",
            new.value if new else "cleared",
            user_id,
            record.agent,
            record.agent_message_id,
            scope.chat_id,
        )
        await acknowledge(str(texts.FEEDBACK_THANKS[new.value] if new else texts.FEEDBACK_CLEARED))
        return record

    async def _refresh_buttons(self, scope: ChatScope, key: str, record: AnswerRecord) -> None:
        """Show the ratings on the buttons. One refresh per answer at a time: presses that come
        while one waits for the chat's flood budget are shown by it, since it reads the ratings
        only when its turn comes."""
        if key in self._refresh_pending:
            return
        self._refresh_pending.add(key)
        message_id = record.message_ids[0]

        async def build() -> InlineKeyboardMarkup | None:
            if scope.chat_id < 0:
                counts = await self._storage.feedback.counts(scope, message_id)
                return answer_keyboard(feedback=True, counts=counts, suggestions=record.suggestions)
            own = await self._storage.feedback.get(scope, message_id, scope.chat_id)
            return answer_keyboard(feedback=True, selected=own, suggestions=record.suggestions)

        try:
            await self._sender.refresh_markup(
                scope.chat_id,
                record.message_ids[-1],
                build,
                on_turn=lambda: self._refresh_pending.discard(key),
            )
        except (DeliveryFailed, TelegramBadRequest) as exc:
            logger.warning("could not update rating buttons in chat %s: %s", scope.chat_id, exc)
        finally:
            self._refresh_pending.discard(key)

    async def _record(
        self, scope: ChatScope, agent: str, old: str | None, new: Rating | None
    ) -> None:
        try:
            await self._storage.stats.record_rating(
                scope.bot_id, agent, at=time.time(), old=old, new=new.value if new else None
            )
        except RedisError as exc:  # statistics must never break a rating
            logger.warning("could not record rating statistics: %s", exc)


def _recount(counts: dict[str, int], old: str | None, new: str | None) -> dict[str, int]:
    after = {rating.value: counts.get(rating.value, 0) for rating in Rating}
    if old in after:
        after[old] = max(0, after[old] - 1)
    if new in after:
        after[new] += 1
    return after


def _majority(counts: dict[str, int]) -> Rating | None:
    likes, dislikes = counts.get("like", 0), counts.get("dislike", 0)
    if likes == dislikes:
        return None
    return Rating.LIKE if likes > dislikes else Rating.DISLIKE


def _parse(value: str | None) -> Rating | None:
    return Rating(value) if value in ("like", "dislike") else None
