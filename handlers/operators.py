"""Operator commands: /agents, /agent, /stats, /reload, /mode. Refused to everyone else."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
    User,
)

from bot import texts, views
from bot.keyboards import AgentCallback
from bot.services.operators import OperatorService, SwitchOutcome, SwitchResult
from bot.streaming.sender import ChatSender
from handlers.scope import scope_of, target_of

OPERATOR_COMMANDS = ("agents", "agent", "stats", "reload", "mode")


class IsOperator(Filter):
    async def __call__(self, event: TelegramObject, operator_service: OperatorService) -> bool:
        user: User | None = getattr(event, "from_user", None)
        return operator_service.is_operator(user.id if user else None)


def create_router() -> Router:
    router = Router(name="operators")
    router.message.register(list_agents, Command("agents"), IsOperator())
    router.message.register(pick_agent, Command("agent"), IsOperator())
    router.message.register(stats, Command("stats"), IsOperator())
    router.message.register(reload_agents, Command("reload"), IsOperator())
    router.message.register(set_mode, Command("mode"), IsOperator())
    router.message.register(refuse, Command(*OPERATOR_COMMANDS))
    router.callback_query.register(switch_by_button, AgentCallback.filter(), IsOperator())
    router.callback_query.register(refuse_button, AgentCallback.filter())
    return router


async def list_agents(
    message: Message, bot: Bot, operator_service: OperatorService, sender: ChatSender
) -> None:
    listings = await operator_service.list_agents(scope_of(message, bot.id))
    await sender.say(target_of(message), views.agents_list(listings))


async def pick_agent(
    message: Message,
    command: CommandObject,
    bot: Bot,
    operator_service: OperatorService,
    sender: ChatSender,
) -> None:
    scope = scope_of(message, bot.id)
    if command.args:
        result = await operator_service.switch(scope, command.args.strip())
        await sender.say(target_of(message), _switch_text(result))
        return
    listings = await operator_service.list_agents(scope)
    current = next((item.title for item in listings if item.serves_here), "?")
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=("▶ " if item.serves_here else "") + f"{item.title} [{item.platform}]",
                    callback_data=AgentCallback(name=item.name).pack(),
                )
            ]
            for item in listings
        ]
    )
    await sender.say(target_of(message), texts.AGENT_PICK.format(current=current), keyboard)


async def switch_by_button(
    query: CallbackQuery,
    callback_data: AgentCallback,
    bot: Bot,
    operator_service: OperatorService,
) -> None:
    if not isinstance(query.message, Message):
        await query.answer(str(texts.BUTTON_EXPIRED))
        return
    result = await operator_service.switch(scope_of(query.message, bot.id), callback_data.name)
    await query.answer(_switch_text(result))


async def stats(
    message: Message,
    command: CommandObject,
    bot: Bot,
    operator_service: OperatorService,
    sender: ChatSender,
) -> None:
    window = views.parse_window(command.args)
    if window is None:
        await sender.say(target_of(message), str(texts.STATS_USAGE))
        return
    reports = await operator_service.report(bot.id, window[0])
    await sender.say(target_of(message), views.stats_report(reports, window[1]))


async def reload_agents(
    message: Message, operator_service: OperatorService, sender: ChatSender
) -> None:
    result = operator_service.reload()
    text = (
        texts.RELOADED.format(agents=result.detail)
        if result.ok
        else texts.RELOAD_FAILED.format(reason=result.detail)
    )
    await sender.say(target_of(message), text)


async def set_mode(
    message: Message,
    command: CommandObject,
    bot: Bot,
    operator_service: OperatorService,
    sender: ChatSender,
) -> None:
    if message.chat.type == "private":
        await sender.say(target_of(message), str(texts.MODE_GROUPS_ONLY))
        return
    mode = (command.args or "").strip().lower()
    if mode not in texts.MODE_SET:
        await sender.say(target_of(message), str(texts.MODE_USAGE))
        return
    await operator_service.set_mode(scope_of(message, bot.id), mode)
    await sender.say(target_of(message), str(texts.MODE_SET[mode]))


async def refuse(message: Message, sender: ChatSender) -> None:
    await sender.say(target_of(message), str(texts.OPERATORS_ONLY))


async def refuse_button(query: CallbackQuery) -> None:
    await query.answer(str(texts.OPERATORS_ONLY))


def _switch_text(result: SwitchResult) -> str:
    if result.outcome is SwitchOutcome.UNKNOWN:
        return str(texts.AGENT_UNKNOWN).format(name=result.title, known=", ".join(result.known))
    if result.outcome is SwitchOutcome.SWITCHED:
        return str(texts.AGENT_SWITCHED).format(title=result.title)
    return str(texts.AGENT_ALREADY).format(title=result.title)
