"""Who may act on someone else's answer in a group: an operator or a chat administrator."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import AiogramError

from bot.services.chat import Privilege
from bot.services.operators import OperatorService

logger = logging.getLogger("relaygram.handlers")

_ADMIN_STATUSES = frozenset({"creator", "administrator"})


def moderator_check(
    bot: Bot, chat_id: int, user_id: int, operator_service: OperatorService
) -> Privilege:
    async def check() -> bool:
        if operator_service.is_operator(user_id):
            return True
        if chat_id > 0:
            return False
        try:
            member = await bot.get_chat_member(chat_id=chat_id, user_id=user_id)
        except AiogramError as exc:  # an API error, or an answer aiogram cannot read
            logger.info("cannot tell whether %s is an admin of %s: %s", user_id, chat_id, exc)
            return False
        return member.status in _ADMIN_STATUSES

    return check
