"""Inline buttons under answers, with typed, versioned callback data (never `split`-parsed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot import texts
from bot.agents.base import Rating
from bot.i18n import AUTO, LANGUAGE_NAMES

MAX_SUGGESTIONS = 3
_BUTTON_TEXT_LIMIT = 60


class FeedbackCallback(CallbackData, prefix="rg1fb"):
    rating: Rating


class StopCallback(CallbackData, prefix="rg1st"):
    """⏹ under an answer that is still being written (send + edit mode)."""


class AgentCallback(CallbackData, prefix="rg1ag"):
    """An operator picking the agent for a chat (`/agent` without a name)."""

    name: str


class LanguageCallback(CallbackData, prefix="rg1lg"):
    """A language picked under /lang: en, ru, zh or auto (checked by the handler)."""

    code: str


class SuggestionCallback(CallbackData, prefix="rg1sq"):
    # The question itself lives in the answer record: callback data is limited to 64 bytes.
    index: int


def answer_keyboard(
    *,
    feedback: bool,
    selected: str | None = None,
    counts: Mapping[str, int] | None = None,
    suggestions: Sequence[str] = (),
) -> InlineKeyboardMarkup | None:
    """Rating buttons (with the user's choice marked in a private chat, or everyone's totals in
    a group) and up to three suggested questions."""
    rows: list[list[InlineKeyboardButton]] = []
    if feedback:
        rows.append(
            [
                InlineKeyboardButton(
                    text=texts.feedback_button(
                        rating.value,
                        selected == rating.value,
                        counts.get(rating.value, 0) if counts is not None else None,
                    ),
                    callback_data=FeedbackCallback(rating=rating).pack(),
                )
                for rating in (Rating.LIKE, Rating.DISLIKE)
            ]
        )
    for index, question in enumerate(suggestions[:MAX_SUGGESTIONS]):
        rows.append(
            [
                InlineKeyboardButton(
                    text=_shorten(question),
                    callback_data=SuggestionCallback(index=index).pack(),
                )
            ]
        )
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def stop_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=str(texts.STOP_BUTTON), callback_data=StopCallback().pack())]
        ]
    )


def language_keyboard(chosen: str | None) -> InlineKeyboardMarkup:
    """One button per language (each in its own name) and "automatic"; ✓ marks the chat's
    choice (automatic when there is none)."""

    def button(code: str, label: str) -> InlineKeyboardButton:
        mark = "✓ " if code == (chosen or AUTO) else ""
        return InlineKeyboardButton(
            text=mark + label, callback_data=LanguageCallback(code=code).pack()
        )

    return InlineKeyboardMarkup(
        inline_keyboard=[
            [button(code, name) for code, name in LANGUAGE_NAMES.items()],
            [button(AUTO, str(texts.LANG_AUTO_BUTTON))],
        ]
    )


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _BUTTON_TEXT_LIMIT:
        return text
    return text[: _BUTTON_TEXT_LIMIT - 1].rstrip() + "…"
