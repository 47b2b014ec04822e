"""/start, /help, /reset (/new), /stop."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from bot import texts
from bot.services.chat import ChatService, StopOutcome
from bot.services.operators import OperatorService
from bot.streaming.sender import ChatSender
from handlers.permissions import moderator_check
from handlers.scope import scope_of, target_of


def create_router() -> Router:
    router = Router(name="commands")
    router.message.filter(F.chat.type.in_({"private", "group", "supergroup"}))
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    router.message.register(reset, Command("reset", "new"))
    router.message.register(stop, Command("stop"))
    return router


async def start(message: Message, bot: Bot, chat_service: ChatService, sender: ChatSender) -> None:
    title = await chat_service.agent_title(scope_of(message, bot.id))
    await sender.say(target_of(message), texts.GREETING.format(agent=title))


async def help_(message: Message, bot: Bot, chat_service: ChatService, sender: ChatSender) -> None:
    title = await chat_service.agent_title(scope_of(message, bot.id))
    await sender.say(target_of(message), texts.HELP.format(agent=title))


async def reset(message: Message, bot: Bot, chat_service: ChatService, sender: ChatSender) -> None:
    title = await chat_service.reset(scope_of(message, bot.id))
    await sender.say(target_of(message), texts.RESET_DONE.format(agent=title))


async def stop(
    message: Message,
    bot: Bot,
    chat_service: ChatService,
    operator_service: OperatorService,
    sender: ChatSender,
) -> None:
    user_id = message.from_user.id if message.from_user else None
    privilege = (
        moderator_check(bot, message.chat.id, user_id, operator_service) if user_id else None
    )
    outcome = await chat_service.stop(scope_of(message, bot.id), user_id, privilege)
    if outcome is StopOutcome.NOTHING_RUNNING:
        await sender.say(target_of(message), str(texts.NOTHING_TO_STOP))
    elif outcome is StopOutcome.NOT_ALLOWED:
        await sender.say(target_of(message), str(texts.STOP_NOT_YOURS))
