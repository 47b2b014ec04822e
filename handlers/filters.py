"""Which group messages are meant for the bot: a mention, a reply to the bot, or a command."""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.filters import Filter
from aiogram.types import Message

from handlers.scope import scope_of
from storage import Storage


class AddressedToBot(Filter):
    """True in private chats; in groups when the bot is mentioned or replied to, or for every
    message when an operator set the group's mode to "all".

    Passes `question`: the text with the bot's @mention removed, to the handler.
    """

    async def __call__(self, message: Message, bot: Bot, store: Storage) -> bool | dict[str, Any]:
        text = message.text or message.caption or ""
        if message.chat.type == "private":
            return {"question": text}
        me = await bot.me()
        mention = f"@{me.username}".lower() if me.username else None
        mentioned = False
        for entity in message.entities or message.caption_entities or []:
            if entity.type == "mention" and mention:
                if entity.extract_from(text).lower() == mention:
                    mentioned = True
            elif entity.type == "text_mention" and entity.user and entity.user.id == bot.id:
                mentioned = True
        if mentioned or _replies_to_bot(message, bot.id):
            question = _strip_mention(text, mention) if mention else text
            return {"question": question}
        # An operator may have set this group to "all": every message is a question.
        prefs = await store.chat_prefs.get(scope_of(message, bot.id))
        if prefs.mode == "all" and not text.startswith("/"):
            return {"question": text}
        return False


def _replies_to_bot(message: Message, bot_id: int) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None:
        return False
    # In a forum topic every message "replies" to the topic's creation message: not a reply.
    if replied.forum_topic_created is not None:
        return False
    return replied.from_user.id == bot_id


def _strip_mention(text: str, mention: str) -> str:
    lowered = text.lower()
    at = lowered.find(mention)
    while at != -1:
        text = text[:at] + text[at + len(mention) :]
        lowered = text.lower()
        at = lowered.find(mention)
    return " ".join(text.split()) if "\n" not in text else text.strip()
