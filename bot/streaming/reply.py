"""One answer as the user sees it: a placeholder, then text that grows, then the final state.

The text to show (`update`) is kept apart from the text shown. A single writer task closes the
gap one Bot API call at a time, each granted by the flood scheduler, and always with the newest
text: updates that arrive while it waits are coalesced. `finish` hands over the final state
(footer, buttons) and returns only when that state has landed, whatever 429s or network errors
happen on the way.

Two ways to show a growing answer:
- draft (private chats, Bot API 10.3): the open page is a `sendMessageDraft` preview with
  Telegram's own stop button; every finished page, and the final one with its buttons, is
  persisted with `sendMessage`. Drafts live 30 s, so an unchanged draft is refreshed.
- edit (groups, and wherever drafts are unavailable): `sendMessage`, then `editMessageText`,
  with an inline ⏹ button under the page that is still growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from enum import Enum

from aiogram.exceptions import TelegramBadRequest, TelegramNotFound
from aiogram.types import InlineKeyboardMarkup

from bot.lean_event import LeanEvent
from bot.streaming.clock import Clock
from bot.streaming.render import (
    TEXT_LIMIT,
    Entity,
    Paginator,
    RenderedText,
    fits,
    plain,
    utf16_len,
)
from bot.streaming.scheduler import Priority
from bot.streaming.sender import ChatSender, DeliveryFailed, FloodWait, Target

logger = logging.getLogger("relaygram.streaming")

_SEPARATOR = plain("\n\n")
REASONING_RESERVE = 1024  # UTF-16 units of page 1 kept for the collapsed reasoning block


class Mode(Enum):
    DRAFT = "draft"
    EDIT = "edit"


class DraftSupport:
    """Whether this bot's Bot API server accepts drafts; learnt once, shared by all answers.

    With `insist` (STREAM_MODE=draft) a rejection falls back for that answer only and the next
    answer tries drafts again; otherwise (auto) the bot stops trying after the first one.
    """

    def __init__(self, enabled: bool, *, insist: bool = False) -> None:
        self.available = enabled
        self._insist = insist

    def reject(self, reason: str) -> None:
        if self._insist:
            logger.error("drafts rejected despite STREAM_MODE=draft (%s); editing instead", reason)
            return
        if self.available:
            logger.warning("the Bot API server rejects drafts (%s): using send + edit", reason)
        self.available = False


@dataclass(slots=True)
class _Page:
    content: RenderedText
    markup: InlineKeyboardMarkup | None
    _fingerprint: bytes | None = None

    @property
    def fingerprint(self) -> bytes:
        """Computed once per render: the writer compares it on every look."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.content)
        return self._fingerprint


@dataclass(slots=True)
class _Shown:
    """A message of the answer as Telegram shows it. Not its text: a growing answer would keep
    a second copy of every page for each of a thousand answers; a fingerprint and the size
    are all the comparisons need."""

    message_id: int
    fingerprint: bytes
    size: int
    markup: InlineKeyboardMarkup | None

    @classmethod
    def of(cls, message_id: int, page: _Page) -> _Shown:
        return cls(message_id, page.fingerprint, page.content.size, page.markup)


@dataclass(frozen=True, slots=True)
class _Final:
    footer: RenderedText | None
    markup: InlineKeyboardMarkup | None


@dataclass(frozen=True, slots=True)
class _Step:
    action: str  # "send" | "edit" | "delete" | "draft"
    index: int
    page: _Page | None = None


class ReplyStream:
    TYPING_EVERY = 4.5  # Telegram shows "typing" for 5 s
    # A group has 20 calls a minute for everything: spend one on "typing…" only when the
    # agent is slow to start; an answer that starts sooner is its own sign of life.
    TYPING_DELAY_IN_GROUPS = 1.0
    # Likewise the "Thinking…" draft: every call counts against the bot-wide budget, and when
    # many answers start at once, placeholders sent in the agent's first moments filled the
    # window that their first texts needed (100 answers: 9 placeholders before the first word).
    PLACEHOLDER_DELAY = 1.0
    DRAFT_REFRESH = 20.0  # drafts disappear after 30 s without an update

    def __init__(
        self,
        sender: ChatSender,
        target: Target,
        clock: Clock,
        *,
        draft_id: int | None = None,
        drafts: DraftSupport | None = None,
        stop_markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        self._sender = sender
        self._target = target
        self._clock = clock
        self._drafts = drafts
        self._draft_id = draft_id
        self._mode = Mode.DRAFT if draft_id and drafts and drafts.available else Mode.EDIT
        self._stop_markup = stop_markup
        self._paginator = Paginator()
        self._source = ""
        self._reasoning = ""
        self._final: _Final | None = None
        self._shown: list[_Shown] = []
        self._draft_shown: bytes | None = None  # the fingerprint of the draft on screen
        self._draft_at = 0.0
        self._started_at = clock.now()
        self._plain_only = False  # Telegram refused our entities once: stop sending them
        # What should be shown is rendered once per change, not once per look: `_revision`
        # counts the changes (a counter, so no old text is kept just to compare with).
        self._revision = 0
        self._memo_revision = -1
        self._memo_pages: list[_Page] = []
        self._wake = LeanEvent()
        self._writer: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None
        self.failure: DeliveryFailed | None = None
        self.first_text_at: float | None = None
        self._delivered = False

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def draft_id(self) -> int | None:
        return self._draft_id if self._mode is Mode.DRAFT else None

    @property
    def delivered(self) -> bool:
        """Whether a final state has landed (`finish` returned)."""
        return self._delivered

    @property
    def message_ids(self) -> list[int]:
        return [shown.message_id for shown in self._shown]

    def start(self) -> None:
        self._started_at = self._clock.now()
        self._writer = asyncio.create_task(self._write(), name=f"reply:{self._target.chat_id}")
        if self._mode is Mode.EDIT:
            self._typing = asyncio.create_task(self._keep_typing(), name="typing")

    def update(self, source: str, reasoning: str = "") -> None:
        """The answer so far, as Markdown, and the model's reasoning. Cheap: wakes the writer."""
        self._source = source
        self._reasoning = reasoning
        self._revision += 1
        self._wake.set()

    async def finish(
        self,
        source: str,
        footer: RenderedText | None = None,
        markup: InlineKeyboardMarkup | None = None,
        reasoning: str | None = None,
    ) -> list[int]:
        """Show the final state and wait until it has landed. Returns the message ids."""
        self._source = source
        if reasoning is not None:
            self._reasoning = reasoning
        self._final = _Final(footer, markup)
        self._revision += 1
        self._wake.set()
        if self._writer is None:
            self.start()
        assert self._writer is not None
        try:
            await self._writer
        finally:
            await self._stop_typing()
        self._delivered = True
        return self.message_ids

    async def close(self) -> None:
        """Abandon the answer without a final state (shutdown)."""
        for task in (self._writer, self._typing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- what should be on screen ----------------------------------------------------------------

    def _desired(self) -> list[_Page]:
        if self._memo_revision != self._revision:
            self._memo_pages, self._memo_revision = self._render(), self._revision
        return self._memo_pages

    def _render(self) -> list[_Page]:
        if self._reasoning:
            self._paginator.first_limit = TEXT_LIMIT - REASONING_RESERVE
        contents = self._paginator.paginate(self._source)
        if self._reasoning:
            contents = self._with_reasoning(contents)
        final = self._final
        if final is not None and final.footer is not None:
            if contents and fits(contents[-1] + _SEPARATOR + final.footer):
                contents[-1] = contents[-1] + _SEPARATOR + final.footer
            else:
                contents.append(final.footer)
        if self._plain_only:
            contents = [plain(c.text) for c in contents]
        pages = [_Page(c, None) for c in contents]
        if pages:
            if final is not None:
                pages[-1].markup = final.markup
            elif self._mode is Mode.EDIT:
                pages[-1].markup = self._stop_markup
        return pages

    def _with_reasoning(self, contents: list[RenderedText]) -> list[RenderedText]:
        """Put the reasoning, collapsed, above the answer on page 1 (never part of the answer)."""
        first = contents[0] if contents else plain("")
        room = TEXT_LIMIT - first.size - (2 if first.text else 0)
        block = _reasoning_block(self._reasoning, min(room, REASONING_RESERVE))
        if block is None:
            return contents
        joined = block + _SEPARATOR + first if first.text else block
        return [joined, *contents[1:]]

    def _persisted(self, desired: list[_Page]) -> list[_Page]:
        """The pages that are real messages: all in edit mode; in draft mode all but the last."""
        if self._mode is Mode.EDIT or self._final is not None:
            return desired
        return desired[:-1]

    def _draft(self, desired: list[_Page]) -> _Page | None:
        if self._mode is not Mode.DRAFT or self._final is not None:
            return None
        if desired:
            return desired[-1]
        # An empty draft shows Telegram's "Thinking…" placeholder until text arrives: for an
        # agent slow to start only (an answer that starts sooner is its own sign of life).
        if self._draft_shown is None and self._clock.now() < self._placeholder_at():
            return None
        return _Page(plain(""), None)

    def _placeholder_at(self) -> float:
        return self._started_at + self.PLACEHOLDER_DELAY

    def _next_step(self, desired: list[_Page]) -> _Step | None:
        persisted = self._persisted(desired)
        for index, page in enumerate(persisted):
            if index >= len(self._shown):
                return _Step("send", index, page)
            shown = self._shown[index]
            if shown.fingerprint != page.fingerprint or shown.markup != page.markup:
                following = index + 1
                if (
                    following == len(self._shown)
                    and following < len(persisted)
                    and page.content.size < shown.size
                ):
                    # A page was just sealed shorter than what it shows (cut at a paragraph):
                    # send the next page first, so no text disappears in between.
                    return _Step("send", following, persisted[following])
                return _Step("edit", index, page)
        if len(self._shown) > len(persisted) and (
            self._final is not None or self._mode is Mode.EDIT
        ):
            return _Step("delete", len(self._shown) - 1)
        draft = self._draft(desired)
        if draft is not None:
            stale = self._clock.now() - self._draft_at >= self.DRAFT_REFRESH
            if draft.fingerprint != self._draft_shown or stale:
                return _Step("draft", len(persisted), draft)
        return None

    # --- the writer ------------------------------------------------------------------------------

    async def _write(self) -> None:
        try:
            while True:
                if self._next_step(self._desired()) is None:
                    if self._final is not None:
                        return
                    self._wake.clear()
                    if self._next_step(self._desired()) is None:
                        await self._clock.wait(self._wake, self._idle_timeout())
                    continue
                # After a FloodWait the scheduler holds this chat back; then the newest text goes.
                with contextlib.suppress(FloodWait):
                    async with self._sender.flood.call(self._target.chat_id, self._priority):
                        await self._apply_next()  # recomputed after the wait: the newest text
        except DeliveryFailed as exc:
            logger.warning("giving up on an answer in chat %s: %s", self._target.chat_id, exc)
            self.failure = exc

    def _idle_timeout(self) -> float:
        if self._mode is Mode.DRAFT:
            if self._draft_shown is not None:
                return max(0.0, self._draft_at + self.DRAFT_REFRESH - self._clock.now())
            if not self._shown:  # nothing on screen yet: the placeholder is due then
                return max(0.0, self._placeholder_at() - self._clock.now())
        return 3600.0

    def _priority(self) -> Priority:
        # The first text and the final state are what the user waits for; the rest can lag.
        if self._final is not None:
            return Priority.URGENT
        if self.first_text_at is None:
            # Before any text there is only the "Thinking…" placeholder to show: like the
            # typing indicator it goes when the bot has budget to spare (read again when the
            # turn is chosen, so it becomes urgent as soon as text arrives).
            return Priority.URGENT if self._source.strip() else Priority.BACKGROUND
        return Priority.UPDATE

    async def _apply_next(self) -> None:
        step = self._next_step(self._desired())
        if step is None:
            return
        if step.action == "delete":
            shown = self._shown.pop()
            with contextlib.suppress(TelegramBadRequest):
                await self._sender.perform_delete(self._target.chat_id, shown.message_id)
            return
        assert step.page is not None
        try:
            await self._show(step, step.page)
        except (TelegramBadRequest, TelegramNotFound) as exc:
            await self._recover(step, step.page, exc)

    async def _show(self, step: _Step, page: _Page) -> None:
        if step.action == "draft":
            assert self._draft_id is not None
            await self._sender.perform_draft(self._target, self._draft_id, page.content)
            self._draft_shown, self._draft_at = page.fingerprint, self._clock.now()
        elif step.action == "send":
            target = (
                self._target
                if step.index == 0
                else Target(self._target.chat_id, self._target.thread_id)
            )
            message_id = await self._sender.perform_send(target, page.content, page.markup)
            self._shown.append(_Shown.of(message_id, page))
            self._draft_shown = None  # Telegram clears drafts when a message is sent
        else:
            shown = self._shown[step.index]
            await self._sender.perform_edit(
                self._target.chat_id, shown.message_id, page.content, page.markup
            )
            self._shown[step.index] = _Shown.of(shown.message_id, page)
        if page.content.text.strip() and self.first_text_at is None:
            self.first_text_at = self._clock.now()
        if self._shown or self._draft_shown is not None:
            await self._stop_typing()

    async def _recover(
        self, step: _Step, page: _Page, error: TelegramBadRequest | TelegramNotFound
    ) -> None:
        """A 4xx for our own output. Never lose the text."""
        chat_id = self._target.chat_id
        if step.action == "draft":
            # This Bot API server (or this chat) does not take drafts: show the answer by
            # sending and editing messages instead, for this answer and from now on.
            if self._drafts is not None:
                self._drafts.reject(error.message)
            self._mode = Mode.EDIT
            self._revision += 1
            return
        if step.action == "edit":
            # The message may be gone (deleted by the user) or no longer editable: show the
            # page as a new message. If Telegram refuses that too, the formatting is to blame.
            try:
                async with self._sender.flood.call(chat_id, Priority.URGENT):
                    message_id = await self._sender.perform_send(
                        Target(chat_id, self._target.thread_id), page.content, page.markup
                    )
            except (TelegramBadRequest, TelegramNotFound) as exc:
                error = exc
            else:
                logger.warning(
                    "cannot edit a message in chat %s (%s); resent", chat_id, error.message
                )
                self._shown[step.index] = _Shown.of(message_id, page)
                return
        if page.content.entities and not self._plain_only:
            logger.warning(
                "Telegram rejected formatted text in chat %s (%s); continuing as plain text",
                chat_id,
                error.message,
            )
            self._plain_only = True
            self._revision += 1
            return  # the next step re-renders every page without entities
        raise DeliveryFailed(f"chat {chat_id}: {error.message}") from None

    # --- typing indicator -------------------------------------------------------------------

    async def _keep_typing(self) -> None:
        """Show "typing…" until the first text is on screen."""
        if self._target.chat_id < 0:
            await self._clock.sleep(self.TYPING_DELAY_IN_GROUPS)
        while not self._shown and self._final is None:
            try:
                await self._sender.typing(self._target)
            except (FloodWait, DeliveryFailed, TelegramBadRequest) as exc:
                logger.debug("typing action failed in chat %s: %s", self._target.chat_id, exc)
            await self._clock.sleep(self.TYPING_EVERY)

    async def _stop_typing(self) -> None:
        task, self._typing = self._typing, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _fingerprint(content: RenderedText) -> bytes:
    """Equal for texts Telegram shows alike: it trims leading and trailing whitespace, and an
    edit that changes nothing is refused ("message is not modified")."""
    digest = hashlib.blake2b(content.text.strip().encode("utf-8", "surrogatepass"), digest_size=16)
    digest.update(repr(content.entities).encode())
    return digest.digest()


def _reasoning_block(reasoning: str, room: int) -> RenderedText | None:
    """The reasoning as a collapsed (expandable) quote, its newest part when it is long."""
    text = " ".join(reasoning.split())
    if not text or room < 16:
        return None
    header = "💭 "
    budget = room - utf16_len(header) - 1
    if utf16_len(text) > budget:
        tail = text[-budget:]
        while utf16_len(tail) > budget - 1:
            tail = tail[1:]
        text = "…" + tail
    body = header + text
    entity = Entity(type="expandable_blockquote", offset=0, length=utf16_len(body))
    return RenderedText(body, (entity,))
