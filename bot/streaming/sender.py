"""Every outbound call to a chat, behind the chat's flood budget.

`ChatSender` is the only place that calls the Bot API for chat output. Paced methods spend the
chat's budget first, wait out a 429 and retry the same call (right for notices and button
updates). The streaming layer instead spends the budget itself and calls `perform_*`, because
after a 429 it wants to send the *newest* text, not repeat a stale one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters

from bot.streaming.clock import Clock
from bot.streaming.render import RenderedText, telegram_entities
from bot.streaming.scheduler import FloodScheduler, Priority

logger = logging.getLogger("relaygram.telegram")

T = TypeVar("T")

_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


@dataclass(frozen=True, slots=True)
class Target:
    """Where an answer goes: a chat, optionally a forum topic, optionally replying to a message."""

    chat_id: int
    thread_id: int | None = None
    reply_to: int | None = None


class FloodWait(Exception):
    """Telegram answered 429; the scheduler holds the chat back. Retry with the newest state."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class DeliveryFailed(Exception):
    """The chat cannot be written to (bot blocked, chat gone, Telegram down for too long)."""


class ChatSender:
    NETWORK_ATTEMPTS = 4

    def __init__(self, bot: Bot, flood: FloodScheduler, clock: Clock) -> None:
        self.bot = bot
        self.flood = flood
        self._clock = clock

    # --- paced: spend budget, retry 429 and network errors ------------------------------------

    async def say(
        self, target: Target, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> int:
        """A short plain-text message from the bot (confirmations, refusals, pickers)."""
        return await self.notice(target, RenderedText(text), markup)

    async def notice(
        self,
        target: Target,
        content: RenderedText,
        markup: InlineKeyboardMarkup | None = None,
    ) -> int:
        return await self._paced(target.chat_id, lambda: self.perform_send(target, content, markup))

    async def refresh_markup(
        self,
        chat_id: int,
        message_id: int,
        build: Callable[[], Awaitable[InlineKeyboardMarkup | None]],
        on_turn: Callable[[], None] = lambda: None,
    ) -> None:
        """Update a message's buttons to a state read only once the chat's turn has come, so
        a burst of changes (ratings in a group) ends with the newest state, not a stale one."""

        async def call() -> None:
            on_turn()
            markup = await build()
            await self.bot.edit_message_reply_markup(
                chat_id=chat_id, message_id=message_id, reply_markup=markup
            )

        await self._paced(chat_id, call)

    async def typing(self, target: Target) -> None:
        async with self.flood.call(target.chat_id, Priority.BACKGROUND):
            await self._once(
                target.chat_id,
                lambda: self.bot.send_chat_action(
                    chat_id=target.chat_id, action="typing", message_thread_id=target.thread_id
                ),
            )

    # --- unpaced: the caller has spent the budget ----------------------------------------------

    async def perform_send(
        self, target: Target, content: RenderedText, markup: InlineKeyboardMarkup | None
    ) -> int:
        async def call() -> Message:
            return await self.bot.send_message(
                chat_id=target.chat_id,
                message_thread_id=target.thread_id,
                text=content.text,
                entities=telegram_entities(content),
                parse_mode=None,
                link_preview_options=_NO_PREVIEW,
                reply_parameters=(
                    ReplyParameters(message_id=target.reply_to, allow_sending_without_reply=True)
                    if target.reply_to
                    else None
                ),
                reply_markup=markup,
            )

        message = await self._once(target.chat_id, call)
        return message.message_id

    async def perform_edit(
        self,
        chat_id: int,
        message_id: int,
        content: RenderedText,
        markup: InlineKeyboardMarkup | None,
    ) -> None:
        async def call() -> None:
            await self.bot.edit_message_text(
                chat_id=chat_id,
                message_id=message_id,
                text=content.text,
                entities=telegram_entities(content),
                parse_mode=None,
                link_preview_options=_NO_PREVIEW,
                reply_markup=markup,
            )

        await self._once(chat_id, call)

    async def perform_draft(self, target: Target, draft_id: int, content: RenderedText) -> None:
        """Show (or replace) the answer's draft; empty text shows Telegram's placeholder."""

        async def call() -> None:
            await self.bot.send_message_draft(
                chat_id=target.chat_id,
                draft_id=draft_id,
                message_thread_id=target.thread_id,
                text=content.text,
                entities=telegram_entities(content),
                parse_mode=None,
                can_stop=True,
            )

        await self._once(target.chat_id, call)

    async def perform_delete(self, chat_id: int, message_id: int) -> None:
        async def call() -> None:
            await self.bot.delete_message(chat_id=chat_id, message_id=message_id)

        await self._once(chat_id, call)

    # --- plumbing -------------------------------------------------------------------------------

    async def _paced(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            async with self.flood.call(chat_id, Priority.URGENT):
                try:
                    return await self._once(chat_id, call)
                except FloodWait:
                    pass  # the scheduler now holds this chat back for retry_after

    async def _once(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """One logical call: 429 becomes FloodWait, transient network errors are retried."""
        delay = 0.5
        for attempt in range(1, self.NETWORK_ATTEMPTS + 1):
            try:
                return await call()
            except TelegramRetryAfter as exc:
                logger.warning(
                    "429 from Telegram for chat %s: retry after %ss", chat_id, exc.retry_after
                )
                self.flood.penalize(chat_id, exc.retry_after)
                raise FloodWait(exc.retry_after) from None
            except TelegramForbiddenError as exc:
                raise DeliveryFailed(f"chat {chat_id}: {exc.message}") from None
            except (TelegramNetworkError, TelegramServerError) as exc:
                if attempt == self.NETWORK_ATTEMPTS:
                    raise DeliveryFailed(f"chat {chat_id}: {exc.message}") from None
                logger.warning(
                    "Telegram call for chat %s failed (%s), attempt %d; retrying",
                    chat_id,
                    exc.message,
                    attempt,
                )
                await self._clock.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")
