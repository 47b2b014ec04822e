"""Inline buttons: 👍/👎 under answers, suggested questions, and anything stale or forged."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.types import CallbackQuery, Message

from bot import texts
from bot.keyboards import FeedbackCallback, StopCallback, SuggestionCallback
from bot.services.chat import ChatService, StopOutcome
from bot.services.feedback import FeedbackService
from bot.services.operators import OperatorService
from handlers.permissions import moderator_check
from handlers.scope import is_private, scope_of

logger = logging.getLogger("relaygram.handlers")


def create_router() -> Router:
    router = Router(name="callbacks")
    router.callback_query.register(rate, FeedbackCallback.filter())
    router.callback_query.register(ask_suggestion, SuggestionCallback.filter())
    router.callback_query.register(stop_answer, StopCallback.filter())
    router.callback_query.register(unknown_button)
    return router


async def rate(
    query: CallbackQuery,
    callback_data: FeedbackCallback,
    bot: Bot,
    feedback_service: FeedbackService,
) -> None:
    if not isinstance(query.message, Message):  # inline or too old to be accessible
        await query.answer(str(texts.BUTTON_EXPIRED))
        return

    async def acknowledge(text: str) -> object:
        return await query.answer(text)

    await feedback_service.rate(
        scope_of(query.message, bot.id),
        query.message.message_id,
        query.from_user.id,
        callback_data.rating,
        acknowledge,
    )


async def ask_suggestion(
    query: CallbackQuery,
    callback_data: SuggestionCallback,
    bot: Bot,
    chat_service: ChatService,
) -> None:
    if not isinstance(query.message, Message):
        await query.answer(str(texts.BUTTON_EXPIRED))
        return
    scope = scope_of(query.message, bot.id)
    question = await chat_service.find_suggestion(
        scope, query.message.message_id, callback_data.index
    )
    if question is None:
        await query.answer(str(texts.SUGGESTION_UNKNOWN))
        return
    await query.answer()  # at once: the answer itself can take a while
    await chat_service.ask_suggested(scope, question, query.from_user.id, is_private(query.message))


_STOP_NOTICES = {
    StopOutcome.STOPPED: texts.STOPPING,
    StopOutcome.NOTHING_RUNNING: texts.NOTHING_TO_STOP,
    StopOutcome.NOT_ALLOWED: texts.STOP_NOT_YOURS,
}


async def stop_answer(
    query: CallbackQuery,
    bot: Bot,
    chat_service: ChatService,
    operator_service: OperatorService,
) -> None:
    if not isinstance(query.message, Message):
        await query.answer(str(texts.BUTTON_EXPIRED))
        return
    user_id = query.from_user.id
    privilege = moderator_check(bot, query.message.chat.id, user_id, operator_service)
    outcome = await chat_service.stop(scope_of(query.message, bot.id), user_id, privilege)
    await query.answer(str(_STOP_NOTICES[outcome]))


async def unknown_button(query: CallbackQuery) -> None:
    logger.info(
        "unrecognised callback data %r from user %s", (query.data or "")[:64], query.from_user.id
    )
    await query.answer(str(texts.BUTTON_EXPIRED))
