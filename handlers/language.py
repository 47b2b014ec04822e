"""/lang: the language a chat is answered in, chosen for the chat or left to each person's
Telegram language ("auto"). In groups only operators and the chat's admins may change it."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, User
from aiogram.utils.i18n import I18n

from bot import texts
from bot.i18n import AUTO, LANGUAGE_NAMES, LANGUAGES, choose_locale
from bot.keyboards import LanguageCallback, language_keyboard
from bot.services.operators import OperatorService
from bot.streaming.sender import ChatSender
from handlers.permissions import moderator_check
from handlers.scope import scope_of, target_of
from storage import ChatScope, Storage

CHOICES = (*LANGUAGES, AUTO)


def create_router() -> Router:
    router = Router(name="language")
    router.message.filter(F.chat.type.in_({"private", "group", "supergroup"}))
    router.message.register(language, Command("lang"))
    router.callback_query.register(pick_language, LanguageCallback.filter())
    return router


async def language(
    message: Message,
    command: CommandObject,
    bot: Bot,
    store: Storage,
    operator_service: OperatorService,
    sender: ChatSender,
    i18n: I18n,
) -> None:
    """`/lang` shows the language and the picker; `/lang ru|en|zh|auto` sets it."""
    scope = scope_of(message, bot.id)
    target = target_of(message)
    if not command.args:
        chosen = (await store.chat_prefs.get(scope)).language
        await sender.say(target, _overview(i18n, chosen), language_keyboard(chosen))
        return
    choice = command.args.strip().lower()
    if choice not in CHOICES:
        await sender.say(target, str(texts.LANG_USAGE))
        return
    if not await _may_change(message, message.from_user, bot, operator_service):
        await sender.say(target, str(texts.LANG_ADMINS_ONLY))
        return
    await sender.say(target, await _choose(store, scope, choice, message.from_user, i18n))


async def pick_language(
    query: CallbackQuery,
    callback_data: LanguageCallback,
    bot: Bot,
    store: Storage,
    operator_service: OperatorService,
    sender: ChatSender,
    i18n: I18n,
) -> None:
    message = query.message
    if not isinstance(message, Message) or callback_data.code not in CHOICES:
        await query.answer(str(texts.BUTTON_EXPIRED))
        return
    if not await _may_change(message, query.from_user, bot, operator_service):
        await query.answer(str(texts.LANG_ADMINS_ONLY))
        return
    confirmation = await _choose(
        store, scope_of(message, bot.id), callback_data.code, query.from_user, i18n
    )
    await query.answer()
    await sender.say(target_of(message), confirmation)


def _overview(i18n: I18n, chosen: str | None) -> str:
    """What /lang says: the language in use here, where it comes from, how to change it."""
    source = texts.LANG_CHOSEN if chosen in LANGUAGES else texts.LANG_FROM_TELEGRAM
    current = str(texts.LANG_CURRENT).format(language=LANGUAGE_NAMES[i18n.current_locale])
    return "\n".join((current, str(source), str(texts.LANG_CHOOSE)))


async def _may_change(
    message: Message, user: User | None, bot: Bot, operator_service: OperatorService
) -> bool:
    if message.chat.type == "private":
        return True
    sender_chat = message.sender_chat
    if sender_chat is not None and sender_chat.id == message.chat.id:
        return True  # an anonymous admin, writing as the group itself
    if user is None:
        return False
    return await moderator_check(bot, message.chat.id, user.id, operator_service)()


async def _choose(
    store: Storage, scope: ChatScope, choice: str, user: User | None, i18n: I18n
) -> str:
    """Store the choice; the confirmation, in the language the chat speaks from now on."""
    chosen = None if choice == AUTO else choice
    await store.chat_prefs.set_language(scope, chosen)
    with i18n.use_locale(choose_locale(chosen, user.language_code if user else None)):
        if chosen is None:
            return str(texts.LANG_SET_AUTO)
        return str(texts.LANG_SET).format(language=LANGUAGE_NAMES[chosen])
