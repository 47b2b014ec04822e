"""One answer as the user sees it: typing, then a message that grows in place, then the final state.

The text to show (`update`) is kept apart from the text shown (`_shown`). A single writer task
closes the gap one Bot API call at a time, each paid from the chat's flood budget, and always
with the newest text: updates that arrive while it waits are coalesced. `finish` hands over the
final state (footer, buttons) and returns only when that state has landed, whatever 429s or
network errors happen on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import InlineKeyboardMarkup

from bot.streaming.clock import Clock
from bot.streaming.render import Paginator, RenderedText, fits, plain
from bot.streaming.scheduler import Priority
from bot.streaming.sender import ChatSender, DeliveryFailed, FloodWait, Target

logger = logging.getLogger("relaygram.streaming")

_SEPARATOR = plain("\n\n")


@dataclass(slots=True)
class _Page:
    content: RenderedText
    markup: InlineKeyboardMarkup | None


@dataclass(slots=True)
class _Shown:
    message_id: int
    content: RenderedText
    markup: InlineKeyboardMarkup | None


@dataclass(frozen=True, slots=True)
class _Final:
    footer: RenderedText | None
    markup: InlineKeyboardMarkup | None


class ReplyStream:
    TYPING_EVERY = 4.5  # Telegram shows "typing" for 5 s

    def __init__(self, sender: ChatSender, target: Target, clock: Clock) -> None:
        self._sender = sender
        self._target = target
        self._clock = clock
        self._paginator = Paginator()
        self._source = ""
        self._final: _Final | None = None
        self._shown: list[_Shown] = []
        self._plain_only = False  # Telegram refused our entities once: stop sending them
        self._memo: tuple[str, _Final | None, bool, list[_Page]] | None = None
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None
        self.failure: DeliveryFailed | None = None

    @property
    def message_ids(self) -> list[int]:
        return [shown.message_id for shown in self._shown]

    @property
    def has_text(self) -> bool:
        return bool(self._shown)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name=f"reply:{self._target.chat_id}")
        self._typing = asyncio.create_task(self._keep_typing(), name="typing")

    def update(self, source: str) -> None:
        """The answer so far, as Markdown. Cheap: it only wakes the writer."""
        self._source = source
        self._wake.set()

    async def finish(
        self,
        source: str,
        footer: RenderedText | None = None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> list[int]:
        """Show the final state and wait until it has landed. Returns the message ids."""
        self._source = source
        self._final = _Final(footer, markup)
        self._wake.set()
        if self._writer is None:
            self.start()
        assert self._writer is not None
        try:
            await self._writer
        finally:
            await self._stop_typing()
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
        memo = self._memo
        if (
            memo
            and memo[0] is self._source
            and memo[1] is self._final
            and memo[2] == self._plain_only
        ):
            return memo[3]
        pages = self._render()
        self._memo = (self._source, self._final, self._plain_only, pages)
        return pages

    def _render(self) -> list[_Page]:
        contents = self._paginator.paginate(self._source)
        final = self._final
        markup = None
        if final is not None:
            markup = final.markup
            if final.footer is not None:
                if contents and fits(contents[-1] + _SEPARATOR + final.footer):
                    contents[-1] = contents[-1] + _SEPARATOR + final.footer
                else:
                    contents.append(final.footer)
        if self._plain_only:
            contents = [plain(c.text) for c in contents]
        pages = [_Page(c, None) for c in contents]
        if pages:
            pages[-1].markup = markup
        return pages

    # --- the writer ------------------------------------------------------------------------------

    async def _write(self) -> None:
        try:
            while True:
                if not self._pending():
                    if self._final is not None:
                        return
                    self._wake.clear()
                    if not self._pending():
                        await self._wake.wait()
                    continue
                await self._sender.flood.turn(self._target.chat_id, self._priority)
                try:
                    await self._apply_next()  # recomputed after the wait: the newest text
                except FloodWait:
                    continue  # the scheduler holds this chat back; then send what is newest
        except DeliveryFailed as exc:
            logger.warning("giving up on an answer in chat %s: %s", self._target.chat_id, exc)
            self.failure = exc

    def _priority(self) -> Priority:
        # The first text and the final state are what the user waits for; the rest can lag.
        if not self._shown or self._final is not None:
            return Priority.URGENT
        return Priority.UPDATE

    def _pending(self) -> bool:
        return self._next_step(self._desired()) is not None

    def _next_step(self, desired: list[_Page]) -> tuple[str, int] | None:
        for index, page in enumerate(desired):
            if index >= len(self._shown):
                return ("send", index)
            shown = self._shown[index]
            if shown.content != page.content or shown.markup != page.markup:
                return ("edit", index)
        if len(self._shown) > len(desired):
            return ("delete", len(self._shown) - 1)
        return None

    async def _apply_next(self) -> None:
        desired = self._desired()
        step = self._next_step(desired)
        if step is None:
            return
        action, index = step
        if action == "delete":
            shown = self._shown.pop()
            with contextlib.suppress(TelegramBadRequest):
                await self._sender.perform_delete(self._target.chat_id, shown.message_id)
            return
        page = desired[index]
        try:
            await self._show(action, index, page)
        except TelegramBadRequest as exc:
            await self._recover(action, index, page, exc)

    async def _show(self, action: str, index: int, page: _Page) -> None:
        if action == "send":
            target = (
                self._target if index == 0 else Target(self._target.chat_id, self._target.thread_id)
            )
            message_id = await self._sender.perform_send(target, page.content, page.markup)
            self._shown.append(_Shown(message_id, page.content, page.markup))
            await self._stop_typing()
        else:
            shown = self._shown[index]
            await self._sender.perform_edit(
                self._target.chat_id, shown.message_id, page.content, page.markup
            )
            shown.content, shown.markup = page.content, page.markup

    async def _recover(
        self, action: str, index: int, page: _Page, error: TelegramBadRequest
    ) -> None:
        """A 400 for our own output. Never lose the text: drop formatting, then re-send."""
        if page.content.entities and not self._plain_only:
            logger.warning(
                "Telegram rejected formatted text in chat %s (%s); continuing as plain text",
                self._target.chat_id,
                error.message,
            )
            self._plain_only = True
            return  # the next step re-renders every page without entities
        if action == "edit":
            # The message is gone or cannot be edited any more: show the page as a new message.
            logger.warning(
                "cannot edit message in chat %s (%s); sending the page again",
                self._target.chat_id,
                error.message,
            )
            old = self._shown[index]
            message_id = await self._sender.perform_send(
                Target(self._target.chat_id, self._target.thread_id), page.content, page.markup
            )
            self._shown[index] = _Shown(message_id, page.content, page.markup)
            del old
            return
        raise DeliveryFailed(f"chat {self._target.chat_id}: {error.message}") from None

    # --- typing indicator ---------------------------------------------------------------------

    async def _keep_typing(self) -> None:
        """Show "typing…" until the first text is on screen."""
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
