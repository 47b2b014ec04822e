"""The stop button of a streaming draft (Bot API 10.3 `stopped_message_generation`)."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.types import MessageGenerationStopped

from bot.services.chat import ChatService
from storage import ChatScope

logger = logging.getLogger("relaygram.handlers")


def create_router() -> Router:
    router = Router(name="generation")
    router.stopped_message_generation.register(stopped)
    return router


async def stopped(event: MessageGenerationStopped, bot: Bot, chat_service: ChatService) -> None:
    scope = ChatScope(bot.id, event.chat.id, event.message_thread_id)
    outcome = await chat_service.stop_draft(scope, event.draft_id)
    logger.info(
        "draft %s stopped by the user in chat %s: %s", event.draft_id, scope.chat_id, outcome.value
    )
