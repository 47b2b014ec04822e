"""Markdown -> Telegram text + entities, safely, for an answer that is still being written.

telegramify-markdown does the conversion (plain text + MessageEntity with UTF-16 offsets), so a
half-written `**` is just two asterisks, never a 400 "can't parse entities". Two things are
added here because the library does not do them:

- It drops inline and block HTML, which would silently eat text such as `Vec<T>` or
  `a <b> c` from an answer. We escape `<` outside code (keeping autolinks), so every character
  the agent wrote is shown.
- It cannot know that the text will keep growing. `Paginator` cuts the Markdown *source* into
  pages that fit one message each (≤ 4096 UTF-16 code units, ≤ 100 entities) and never changes
  a page once a later one exists, so messages already sent stay put while the answer grows.
  A cut inside a fenced code block closes the fence on one page and reopens it, with its
  language, on the next.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pyromark
import telegramify_markdown
from aiogram.types import MessageEntity

# An entity as the bot keeps it: telegramify-markdown's own slotted dataclass (type, offset and
# length in UTF-16 units, url, language...), about 100 bytes. aiogram's pydantic MessageEntity
# takes about 550 with its field set, and a growing answer keeps every entity of its pages
# twice (what should be shown, what is shown): 1,000 answers held 35,000 of them, 20 MB. So
# entities become aiogram's only for the call that sends them (`telegram_entities`).
Entity = telegramify_markdown.MessageEntity

logger = logging.getLogger("relaygram.render")

TEXT_LIMIT = 4096  # Telegram's message length, in UTF-16 code units
ENTITY_LIMIT = 100  # Telegram ignores entities beyond the 100th

_HTML_OPEN = re.compile(r"(?<!\\)<(?!https?://|mailto:|/?tg-spoiler>)")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*$", re.MULTILINE)


def utf16_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass(frozen=True, slots=True)
class RenderedText:
    text: str
    entities: tuple[Entity, ...] = ()

    @property
    def size(self) -> int:
        return utf16_len(self.text)

    def __add__(self, other: RenderedText) -> RenderedText:
        shift = utf16_len(self.text)
        moved = tuple(e.copy_with(offset=e.offset + shift) for e in other.entities)
        return RenderedText(self.text + other.text, self.entities + moved)


def escape_html(markdown: str) -> str:
    """Escape `<` outside code so the converter shows it instead of dropping it as HTML."""
    if "<" not in markdown:
        return markdown
    data = markdown.encode("utf-8")
    parts: list[str] = []
    cursor = 0
    for start, end in _code_regions(markdown):
        parts.append(_HTML_OPEN.sub(r"\\<", data[cursor:start].decode("utf-8")))
        parts.append(data[start:end].decode("utf-8"))
        cursor = end
    parts.append(_HTML_OPEN.sub(r"\\<", data[cursor:].decode("utf-8")))
    return "".join(parts)


def _code_regions(markdown: str) -> list[tuple[int, int]]:
    """UTF-8 byte ranges the CommonMark parser treats as code (spans and blocks)."""
    regions: list[tuple[int, int]] = []
    last_end = 0
    for payload, source_range in pyromark.events_with_range(markdown):
        if not isinstance(payload, dict):
            continue
        start = payload.get("Start")
        if (isinstance(start, dict) and "CodeBlock" in start) or "Code" in payload:
            begin, end = source_range["start"], source_range["end"]
            if begin >= last_end:  # nested events of one block repeat its range
                regions.append((begin, end))
                last_end = end
    return regions


def render_markdown(markdown: str) -> RenderedText:
    """Convert Markdown to text + entities; on any converter failure, show the raw text."""
    try:
        text, entities = telegramify_markdown.convert(escape_html(markdown), latex_escape=False)
    except Exception:  # the converter is third-party; a bug there must not lose the answer
        logger.exception("markdown conversion failed; sending plain text")
        return RenderedText(markdown)
    if not text.strip() and markdown.strip():
        return RenderedText(markdown)
    return RenderedText(text, tuple(entities))


def telegram_entities(rendered: RenderedText) -> list[MessageEntity] | None:
    """The entities as the Bot API call takes them (None: plain text)."""
    return [MessageEntity(**e.to_dict()) for e in rendered.entities] or None


def plain(text: str) -> RenderedText:
    return RenderedText(text)


def fits(rendered: RenderedText, limit: int = TEXT_LIMIT) -> bool:
    return rendered.size <= limit and len(rendered.entities) <= ENTITY_LIMIT


@dataclass(slots=True)
class Paginator:
    """Turns a growing Markdown answer into stable, message-sized pages.

    `paginate(source)` returns every page for the answer so far. Pages before the last are
    sealed: their content never changes on later calls while `source` only grows. When the
    source is replaced by something that does not extend it (moderation replaced the text),
    pagination starts over.
    """

    limit: int = TEXT_LIMIT
    # Page 1 may have to leave room for something shown above the answer (the reasoning).
    first_limit: int | None = None
    _sealed: list[RenderedText] = field(default_factory=list)
    _consumed: int = 0  # source offset where the open page starts
    _carry: str = ""  # reopened code fence the open page starts with
    # The hash of the source the sealed pages were cut from, to detect a replaced source: a
    # copy of it would be one more copy of every long answer's text, a thousand at a time.
    _sealed_hash: int = hash("")

    def paginate(self, source: str) -> list[RenderedText]:
        if hash(source[: self._consumed]) != self._sealed_hash:
            self._sealed, self._consumed, self._carry = [], 0, ""
            self._sealed_hash = hash("")
        while True:
            body = self._carry + source[self._consumed :]
            rendered = render_markdown(body)
            if fits(rendered, self._open_limit):
                return [*self._sealed, *([rendered] if body.strip() else [])]
            self._seal_one(source)

    def _seal_one(self, source: str) -> None:
        start = self._consumed
        cut = self._best_cut(source, start)
        fence = _open_fence(source, cut)
        page_source = self._carry + source[start:cut]
        if fence is not None:
            page_source = page_source.rstrip("\n") + "\n" + fence[0]
        self._sealed.append(render_markdown(page_source))
        self._carry = f"{fence[0]}{fence[1]}\n" if fence is not None else ""
        self._consumed = cut
        self._sealed_hash = hash(source[:cut])

    def _best_cut(self, source: str, start: int) -> int:
        """The latest cut after `start` whose page fits, preferring paragraph and line ends."""
        lo, hi = start + 1, len(source)
        while lo < hi:  # largest prefix end that still fits (rendered size grows with it)
            mid = (lo + hi + 1) // 2
            if self._page_fits(source, start, mid):
                lo = mid
            else:
                hi = mid - 1
        longest = lo
        window = source[start:longest]
        floor = len(window) // 2  # do not make pages much shorter for a nicer cut
        for separator in ("\n\n", "\n", " "):
            at = window.rfind(separator, floor)
            if at != -1:
                return start + at + len(separator)
        return longest

    def _page_fits(self, source: str, start: int, cut: int) -> bool:
        page = self._carry + source[start:cut]
        fence = _open_fence(source, cut)
        if fence is not None:
            page = page.rstrip("\n") + "\n" + fence[0]
        return fits(render_markdown(page), self._open_limit)

    @property
    def _open_limit(self) -> int:
        if not self._sealed and self.first_limit is not None:
            return min(self.first_limit, self.limit)
        return self.limit


def _open_fence(source: str, position: int) -> tuple[str, str] | None:
    """The (fence, language) of a fenced code block still open at `position`, if any."""
    opened: tuple[str, str] | None = None
    for match in _FENCE.finditer(source, 0, position):
        marker, info = match.group(1), match.group(2)
        if opened is None:
            opened = (marker, info)
        elif marker[0] == opened[0][0] and len(marker) >= len(opened[0]) and not info:
            opened = None
    return opened
