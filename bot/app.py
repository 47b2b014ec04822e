"""The one place that wires everything: Bot, Dispatcher, storage, HTTP client, services, routers.

Tests build the same application with fakes at the seams (`session=` for Telegram, `storage=` on
fakeredis or a test namespace of the real Redis, `http=` for the agents, `clock=` for time), so
what they exercise is what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from aiogram.methods import (
    AnswerCallbackQuery,
    DeleteMessage,
    EditMessageReplyMarkup,
    EditMessageText,
    GetUpdates,
    SendChatAction,
    SendMessage,
    SendMessageDraft,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    ReplyParameters,
)
from aiogram.utils.i18n import I18n
from babel.support import LazyProxy
from pydantic import BaseModel
from redis.asyncio import Redis

from bot import texts
from bot.agents.aiohttp_transport import AiohttpTransport
from bot.agents.registry import AgentDirectory
from bot.config import AgentsConfig, Settings, load_agents
from bot.i18n import DEFAULT_LOCALE, LANGUAGES, ChatLanguageMiddleware, create_i18n
from bot.lean_aiogram import build_validators
from bot.services.access import AccessPolicy, AccessService
from bot.services.chat import ChatService, StreamSettings
from bot.services.feedback import FeedbackService
from bot.services.operators import AgentsLoader, OperatorService
from bot.services.routing import AgentRouting
from bot.streaming.budget import SharedBudget
from bot.streaming.clock import Clock, MonotonicClock
from bot.streaming.meter import BotWideMeter
from bot.streaming.scheduler import FloodLimits, FloodScheduler
from bot.streaming.sender import ChatSender, DeliveryFailed, Target
from handlers import get_routers
from handlers.middlewares import AllowlistMiddleware, ChatOrderMiddleware
from handlers.scope import event_scope
from storage import BUDGET_CONNECTIONS, Storage, open_redis

logger = logging.getLogger("relaygram.app")


@dataclass(slots=True)
class Relaygram:
    bot: Bot
    dispatcher: Dispatcher
    storage: Storage
    agents: AgentDirectory
    chat_service: ChatService
    operator_service: OperatorService
    sender: ChatSender
    http: httpx.AsyncClient
    _owns_http: bool
    _owned_redis: list[Redis]  # clients the app opened (and closes)
    # Built before polling starts, kept for as long as the bot runs (`build_validators`).
    _api_models: list[type[BaseModel]] = field(default_factory=list)

    async def run_polling(self) -> None:
        # SIGHUP reloads the agents file, as /reload does; a broken file is logged and ignored.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, self.operator_service.reload
            )
        self._api_models = build_validators(_MODELS_OF_EVERY_ANSWER)
        # What start-up made (modules, models, validators: ~130k objects) lives as long as
        # the process; unfrozen, each full collection walks all of it again, ~80 ms in which
        # no answer moves (measured). Start-up's garbage is collected first, not kept.
        gc.collect()
        gc.freeze()
        await self.dispatcher.start_polling(
            self.bot, allowed_updates=self.dispatcher.resolve_used_update_types()
        )

    async def aclose(self) -> None:
        # Answers run in the chat service's tasks: end them while their session still works
        # (after polling this already happened, as the dispatcher's shutdown; then it is quick).
        await self.chat_service.shutdown()
        await self.sender.flood.aclose()
        await self.bot.session.close()
        if self._owns_http:
            await self.http.aclose()
        for redis in self._owned_redis:
            await redis.aclose()


# What receiving an update and streaming an answer call and build: made ready before polling
# starts (`bot.lean_aiogram.build_validators`).
_MODELS_OF_EVERY_ANSWER: tuple[type[BaseModel], ...] = (
    GetUpdates,
    SendMessage,
    SendMessageDraft,
    EditMessageText,
    EditMessageReplyMarkup,
    DeleteMessage,
    SendChatAction,
    AnswerCallbackQuery,
    InlineKeyboardMarkup,
    InlineKeyboardButton,
    ReplyParameters,
    MessageEntity,
)


def replica_name(settings: Settings) -> str:
    return settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def agent_http_client() -> httpx.AsyncClient:
    """The HTTP client every agent adapter shares (timeouts are set per request, per agent),
    over aiohttp (`bot.agents.aiohttp_transport` says why). As before it (httpx ignores
    HTTPS_PROXY and the like once a transport is given), agents are reached directly."""
    return httpx.AsyncClient(transport=AiohttpTransport(), headers={"User-Agent": "relaygram"})


async def create_app(
    settings: Settings,
    agents_config: AgentsConfig,
    *,
    session: BaseSession | None = None,
    storage: Storage | None = None,
    http: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    flood_limits: FloodLimits | None = None,
    agents_loader: AgentsLoader | None = None,
) -> Relaygram:
    token = settings.require_bot_token().get_secret_value()
    if session is None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(token, session=session, default=DefaultBotProperties(link_preview_is_disabled=True))

    owned_redis: list[Redis] = []
    if storage is None:
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        redis, embedded = await open_redis(url)
        owned_redis.append(redis)
        if embedded:
            logger.warning(
                "REDIS_URL is not set: using an in-memory store; conversations and feedback "
                "are lost when the bot restarts and are not shared between replicas"
            )
            storage = Storage.on_redis(redis)
        else:
            try:
                budget_redis, _ = await open_redis(url, max_connections=BUDGET_CONNECTIONS)
            except BaseException:
                await redis.aclose()
                raise
            owned_redis.append(budget_redis)
            storage = Storage.on_redis(redis, budget_redis=budget_redis)

    owns_http = http is None
    http = http or agent_http_client()
    agents = AgentDirectory(agents_config, http)

    clock = clock or MonotonicClock()
    limits = flood_limits or FloodLimits(bot_per_second=settings.bot_requests_per_second)
    shared_budget = SharedBudget(storage.bot_budget, bot.id, clock)
    flood = FloodScheduler(clock, limits, shared_budget)
    bot.session.middleware(BotWideMeter(flood))
    sender = ChatSender(bot, flood, clock)
    routing = AgentRouting(agents, storage.chat_prefs)
    chat_service = ChatService(
        agents=agents,
        routing=routing,
        storage=storage,
        sender=sender,
        clock=clock,
        replica=replica_name(settings),
        stream_settings=StreamSettings(mode=settings.stream_mode),
    )
    feedback_service = FeedbackService(
        agents=agents, storage=storage, sender=sender, find_answer=chat_service.find_answer
    )

    operator_service = OperatorService(
        agents=agents,
        routing=routing,
        storage=storage,
        operators=settings.operators,
        load_agents=agents_loader or (lambda: load_agents(settings.agents_file)),
    )
    access_service = AccessService(
        AccessPolicy(
            operators=settings.operators,
            allowed_users=settings.allowed_users,
            allowed_chats=settings.allowed_chats,
            per_minute=settings.rate_limit_per_minute,
            max_length=settings.max_message_length,
        ),
        storage,
    )

    i18n = create_i18n()
    dispatcher = Dispatcher(
        # No handler keeps a conversation state of aiogram's: its FSM middleware would only
        # fill its MemoryStorage with a record per chat and user ever seen, for good.
        disable_fsm=True,
        chat_service=chat_service,
        feedback_service=feedback_service,
        operator_service=operator_service,
        access_service=access_service,
        sender=sender,
        agents=agents,
        store=storage,  # not "storage": that name is aiogram's FSM storage
        i18n=i18n,
    )
    # One chat's messages are handled in the order they were sent, whatever comes after.
    dispatcher.update.outer_middleware(ChatOrderMiddleware())
    # First: everything after it, refusals included, speaks the update's language.
    ChatLanguageMiddleware(i18n, event_scope).register(dispatcher)
    allowlist = AllowlistMiddleware()
    dispatcher.message.outer_middleware(allowlist)
    dispatcher.callback_query.outer_middleware(allowlist)
    dispatcher.include_routers(*get_routers())
    dispatcher.errors.register(_on_unhandled_error)
    dispatcher.startup.register(_register_commands)
    dispatcher.shutdown.register(chat_service.shutdown)

    return Relaygram(
        bot=bot,
        dispatcher=dispatcher,
        storage=storage,
        agents=agents,
        chat_service=chat_service,
        operator_service=operator_service,
        sender=sender,
        http=http,
        _owns_http=owns_http,
        _owned_redis=owned_redis,
    )


async def _register_commands(bot: Bot, operator_service: OperatorService, i18n: I18n) -> None:
    """The command menu per scope: users see theirs, operators also see the operator commands
    (in their private chat with the bot); nobody else ever sees those.

    Each menu is registered in every language: English as the default, and each translation
    for the users whose Telegram app uses that language."""
    menus: dict[str | None, tuple[list[BotCommand], list[BotCommand], list[BotCommand]]] = {}
    with i18n.context():
        for language in LANGUAGES:
            with i18n.use_locale(language):
                private = _commands(texts.COMMAND_DESCRIPTIONS)
                menus[None if language == DEFAULT_LOCALE else language] = (
                    private,
                    _commands(texts.GROUP_COMMAND_DESCRIPTIONS),
                    private + _commands(texts.OPERATOR_COMMAND_DESCRIPTIONS),
                )
    for code, (private, group, _) in menus.items():
        await bot.set_my_commands(
            private, scope=BotCommandScopeAllPrivateChats(), language_code=code
        )
        await bot.set_my_commands(group, scope=BotCommandScopeAllGroupChats(), language_code=code)
    for operator in sorted(operator_service.operators):
        try:
            for code, (_, _, operator_menu) in menus.items():
                await bot.set_my_commands(
                    operator_menu, scope=BotCommandScopeChat(chat_id=operator), language_code=code
                )
        except TelegramAPIError as exc:  # the operator never started the bot: no chat yet
            logger.warning("cannot set operator commands for %s: %s", operator, exc.message)


def _commands(descriptions: Mapping[str, LazyProxy]) -> list[BotCommand]:
    return [BotCommand(command=name, description=str(text)) for name, text in descriptions.items()]


async def _on_unhandled_error(event: ErrorEvent, sender: ChatSender) -> bool:
    """The safety net: a bug in a handler is logged and the user is told, never left waiting."""
    logger.error("unhandled error for update %s", event.update.update_id, exc_info=event.exception)
    update = event.update
    try:
        if update.message is not None:
            chat = update.message.chat
            await sender.say(
                Target(chat.id, update.message.message_thread_id), str(texts.INTERNAL_ERROR)
            )
        elif update.callback_query is not None:
            await update.callback_query.answer(str(texts.INTERNAL_ERROR))
    except (DeliveryFailed, Exception):  # the net must not throw
        logger.exception("could not tell the user about the error")
    return True
