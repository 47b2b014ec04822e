"""Where an update belongs: the chat scope (chat, forum topic) of a message."""

from __future__ import annotations

from aiogram.types import CallbackQuery, Message, MessageGenerationStopped, TelegramObject

from bot.streaming.sender import Target
from storage import ChatScope


def scope_of(message: Message, bot_id: int) -> ChatScope:
    # Only a forum topic is its own conversation; in other chats message_thread_id marks a
    # reply thread, which belongs to the chat's conversation.
    thread = message.message_thread_id if message.is_topic_message else None
    return ChatScope(bot_id=bot_id, chat_id=message.chat.id, thread_id=thread)


def event_scope(event: TelegramObject, bot_id: int) -> ChatScope | None:
    """The chat scope of a message, of a button press under one, or of a stopped draft."""
    if isinstance(event, Message):
        return scope_of(event, bot_id)
    if isinstance(event, CallbackQuery) and isinstance(event.message, Message):
        return scope_of(event.message, bot_id)
    if isinstance(event, MessageGenerationStopped):
        return ChatScope(bot_id=bot_id, chat_id=event.chat.id, thread_id=event.message_thread_id)
    return None


def is_private(message: Message) -> bool:
    return message.chat.type == "private"


def target_of(message: Message) -> Target:
    """Where the bot's short replies to this message go (same chat and topic)."""
    thread = message.message_thread_id if message.is_topic_message else None
    return Target(chat_id=message.chat.id, thread_id=thread)


def replied_bot_message(message: Message, bot_id: int) -> int | None:
    """The id of the bot's message this message replies to (a branch point), if any."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != bot_id:
        return None
    return replied.message_id
