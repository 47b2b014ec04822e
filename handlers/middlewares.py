"""Outer middleware: the allowlists (ALLOWED_USERS / ALLOWED_CHATS) before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.types import CallbackQuery, Message, TelegramObject

from bot import texts
from bot.services.access import AccessService, Verdict
from bot.streaming.sender import ChatSender
from handlers.scope import target_of

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AllowlistMiddleware(BaseMiddleware):
    """Strangers get one polite refusal (per day), then silence; nothing reaches the agents."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        access: AccessService = data["access_service"]
        bot: Bot = data["bot"]
        user = getattr(event, "from_user", None)
        if user is None:
            return await handler(event, data)
        chat_id = _chat_id(event)
        decision = await access.admit(bot.id, user.id, chat_id if chat_id is not None else user.id)
        if decision.verdict is Verdict.ALLOW:
            return await handler(event, data)
        if decision.verdict is Verdict.REFUSE:
            if isinstance(event, Message):
                sender: ChatSender = data["sender"]
                await sender.say(target_of(event), str(texts.NOT_ALLOWED))
            elif isinstance(event, CallbackQuery):
                await event.answer(str(texts.NOT_ALLOWED))
        elif isinstance(event, CallbackQuery):
            await event.answer()  # a silent refusal still stops the button's spinner
        return None


def _chat_id(event: TelegramObject) -> int | None:
    if isinstance(event, Message):
        return event.chat.id
    if isinstance(event, CallbackQuery) and isinstance(event.message, Message):
        return event.message.chat.id
    return None
