"""Every Bot API call spends the bot-wide budget, also the ones made outside a chat's turn.

Streaming and notices wait for their turn in the flood scheduler (`FloodScheduler.call`).
A few calls are made straight through aiogram: the commands menu at start-up, `getMe`, a
button's `answerCallbackQuery`, `getChatMember`. Telegram counts them in the bot's ~30 a
second like any other, so a burst of first texts right after start-up would meet them and
get 429s (the benchmark saw 3-7 when the budget was spent in full). This aiogram session
middleware sends each of them through the scheduler too, as a call of no chat: only the
bot-wide budget applies, and it goes first among the waiting calls, since a user waits for it.
"""

from __future__ import annotations

from typing import Final

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType

from bot.streaming.scheduler import BOT_ITSELF, FloodScheduler, Priority

# The long poll: it holds its connection for many seconds, and Telegram does not limit it.
UNMETERED: Final = frozenset({"getUpdates"})


class BotWideMeter(BaseRequestMiddleware):
    def __init__(self, flood: FloodScheduler) -> None:
        self._flood = flood

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if method.__api_method__ in UNMETERED or self._flood.in_call():
            return await make_request(bot, method)  # a scheduled call: its turn is counted
        async with self._flood.call(BOT_ITSELF, Priority.URGENT):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:  # the caller handles it; the next one waits
                self._flood.penalize(BOT_ITSELF, exc.retry_after)
                raise
