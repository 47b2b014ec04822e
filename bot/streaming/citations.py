"""Sources under an answer: a compact numbered list, with links where a URL exists."""

from __future__ import annotations

from collections.abc import Sequence

from bot import texts
from bot.agents.base import Source
from bot.streaming.render import Entity, RenderedText, utf16_len

MAX_SOURCES = 5
MAX_TITLE = 80
# However many sources there are, the list never takes more than this of a message (UTF-16).
MAX_SIZE = 800


def citations(sources: Sequence[Source]) -> RenderedText | None:
    """ "📚 Sources: 1. Pricing page · 2. FAQ", titles linked; None when there are none."""
    header = str(texts.SOURCES_HEADER)
    text = header
    entities: list[Entity] = []
    shown = 0
    for number, source in enumerate(sources[:MAX_SOURCES], start=1):
        title = _shorten(" ".join(source.title.split()) or str(texts.SOURCE_UNTITLED))
        separator = "" if shown == 0 else " · "
        item = f"{separator}{number}. "
        if utf16_len(text + item + title) > MAX_SIZE:
            break
        text += item
        if source.url:
            entities.append(
                Entity(
                    type="text_link",
                    offset=utf16_len(text),
                    length=utf16_len(title),
                    url=source.url,
                )
            )
        text += title
        shown += 1
    if shown == 0:
        return None
    hidden = len(sources) - shown
    if hidden > 0:
        text += texts.SOURCES_MORE.format(count=hidden)
    return RenderedText(text, tuple(entities))


def _shorten(title: str) -> str:
    if len(title) <= MAX_TITLE:
        return title
    return title[: MAX_TITLE - 1].rstrip() + "…"
