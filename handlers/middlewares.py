"""Outer middlewares: one chat's messages in order, and the allowlists (ALLOWED_USERS /
ALLOWED_CHATS) before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.types import CallbackQuery, Message, TelegramObject, Update

from bot import texts
from bot.services.access import AccessService, Verdict
from bot.services.lanes import Lanes
from bot.streaming.sender import ChatSender
from handlers.scope import scope_of, target_of

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class ChatOrderMiddleware(BaseMiddleware):
    """Handles one chat's messages one at a time, in the order Telegram sent them.

    aiogram handles the updates of one `getUpdates` batch in concurrent tasks, and the first
    awaits of each (the chat's language, the access check: Redis calls on different
    connections) may finish in any order, so two quick messages could reach the agent
    swapped. A task joins its chat's lane in its first step, and the tasks take their first
    steps in the order of the batch. The lane is held only while the handlers run, which is
    short: answers run in `ChatService`'s tasks. Register it on `dispatcher.update`, first.
    Button presses and a draft's stop are not held in line: they must act at once.
    """

    def __init__(self) -> None:
        self._lanes = Lanes()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        message = event.message if isinstance(event, Update) else None
        if message is None:
            return await handler(event, data)
        bot: Bot = data["bot"]
        # The chat's conversation, as the answers' lanes key it (a reply thread is not one).
        async with self._lanes.hold(scope_of(message, bot.id).key):
            return await handler(event, data)


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
