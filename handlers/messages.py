"""User messages: text goes to the agent; anything else gets a clear "text only" reply."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.types import Message

from bot import texts
from bot.services.access import AccessService, Verdict
from bot.services.chat import ChatService, Incoming
from bot.streaming.sender import ChatSender
from handlers.filters import AddressedToBot
from handlers.scope import is_private, replied_bot_message, scope_of, target_of

logger = logging.getLogger("relaygram.handlers")


def create_router() -> Router:
    router = Router(name="messages")
    router.message.filter(F.chat.type.in_({"private", "group", "supergroup"}), AddressedToBot())
    router.message.register(text_message, F.text, F.from_user)
    router.message.register(other_message)
    return router


async def text_message(
    message: Message,
    question: str,
    bot: Bot,
    chat_service: ChatService,
    access_service: AccessService,
    sender: ChatSender,
) -> None:
    assert message.from_user is not None  # guaranteed by the F.from_user filter
    if not question.strip():  # only the @mention: nothing to ask
        await sender.say(target_of(message), str(texts.MENTION_ONLY))
        return
    decision = await access_service.check_question(bot.id, message.from_user.id, question)
    if decision.verdict is Verdict.TOO_LONG:
        limit = access_service.policy.max_length
        await sender.say(
            target_of(message), texts.TOO_LONG.format(length=len(question), limit=limit)
        )
        return
    if decision.verdict is Verdict.RATE_LIMITED:
        await sender.say(
            target_of(message), texts.RATE_LIMITED.format(seconds=decision.wait_seconds)
        )
        return
    chat_service.submit(
        Incoming(
            scope=scope_of(message, bot.id),
            user_id=message.from_user.id,
            text=question,
            private=is_private(message),
            message_id=message.message_id,
            reply_to_message_id=replied_bot_message(message, bot.id),
        )
    )


async def other_message(message: Message, sender: ChatSender) -> None:
    logger.info(
        "non-text message (%s) in chat %s: answered with the text-only notice",
        message.content_type,
        message.chat.id,
    )
    await sender.say(target_of(message), str(texts.TEXT_ONLY))
