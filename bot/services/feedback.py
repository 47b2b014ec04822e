"""👍/👎 on an answer: sent to the platform for that exact message, kept in storage, shown on the
button. Pressing the same choice again takes the rating back (where the platform allows it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiogram.exceptions import TelegramBadRequest

from bot import texts
from bot.agents.base import AgentError, AnswerRef, Rating, SupportsFeedback
from bot.agents.registry import AgentDirectory
from bot.keyboards import answer_keyboard
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
        record = await self._find_answer(scope, message_id)
        if record is None or record.agent_message_id is None:
            await acknowledge(texts.FEEDBACK_UNKNOWN)
            return
        client = self._agents.get(record.agent)
        title = client.title if client else record.agent
        if not isinstance(client, SupportsFeedback):
            await acknowledge(texts.FEEDBACK_UNSUPPORTED.format(agent=title))
            return
        current = await self._storage.feedback.get(scope, message_id, user_id)
        new = None if current == rating.value else rating
        if new is None and not client.feedback_clearable:
            await acknowledge(texts.FEEDBACK_CANNOT_CLEAR.format(agent=title))
            return
        ref = AnswerRef(record.agent_message_id, record.end_user, record.conversation)
        try:
            await client.feedback(ref, new)
        except AgentError as exc:
            logger.warning("feedback to agent %s failed: %s", record.agent, exc)
            await acknowledge(texts.FEEDBACK_FAILED.format(agent=title))
            return
        await self._storage.feedback.set(
            scope, message_id, user_id, new.value if new is not None else None
        )
        logger.info(
            "feedback %s on agent %s message %s in chat %s",
            new.value if new else "cleared",
            record.agent,
            record.agent_message_id,
            scope.chat_id,
        )
        await acknowledge(texts.FEEDBACK_THANKS[new.value] if new else texts.FEEDBACK_CLEARED)
        markup = answer_keyboard(
            feedback=True,
            selected=new.value if new else None,
            suggestions=record.suggestions,
        )
        try:
            await self._sender.edit_markup(scope.chat_id, record.message_ids[-1], markup)
        except (DeliveryFailed, TelegramBadRequest) as exc:
            logger.warning("could not update rating buttons in chat %s: %s", scope.chat_id, exc)
