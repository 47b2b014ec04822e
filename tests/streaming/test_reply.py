"""`ReplyStream` (send + edit mode) against the fake Bot API, through a real aiogram `Bot`.

The chat is read back the way the user sees it (`FakeTelegram.messages`), and the fake enforces
Telegram's flood limits, entity rules and error answers. Time runs 50x faster (`ScaledClock`),
on the same clock for the bot and the fake, so pacing keeps its real proportions.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiogram import Bot
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.streaming.clock import ScaledClock
from bot.streaming.render import plain, render_markdown
from bot.streaming.reply import DraftSupport, ReplyStream
from bot.streaming.scheduler import FloodScheduler
from bot.streaming.sender import ChatSender, Target
from tests.fakes.telegram import (
    DEFAULT_TOKEN,
    ERR_EDIT_NOT_FOUND,
    FakeMessage,
    FakeTelegram,
    FakeTelegramSession,
    FloodLimits,
    RecordedRequest,
)

CHAT = 4242
GROUP = -100_777
FOOTER = plain("— Support · 12 s")
TEXT_METHODS = ("sendMessage", "editMessageText")


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(50)


@pytest.fixture
def telegram(clock: ScaledClock) -> FakeTelegram:
    return FakeTelegram(clock=clock.now, limits=FloodLimits.telegram())


@pytest.fixture
async def sender(telegram: FakeTelegram, clock: ScaledClock) -> AsyncIterator[ChatSender]:
    bot = Bot(DEFAULT_TOKEN, session=FakeTelegramSession(telegram))
    flood = FloodScheduler(clock)
    yield ChatSender(bot, flood, clock)
    await flood.aclose()
    await bot.session.close()


@pytest.fixture
async def new_stream(
    sender: ChatSender, clock: ScaledClock
) -> AsyncIterator[Callable[[int], ReplyStream]]:
    streams: list[ReplyStream] = []

    def make(chat_id: int = CHAT) -> ReplyStream:
        stream = ReplyStream(sender, Target(chat_id), clock)
        streams.append(stream)
        return stream

    yield make
    for stream in streams:
        await stream.close()


def chat_calls(telegram: FakeTelegram, chat_id: int = CHAT) -> list[RecordedRequest]:
    return [r for r in telegram.requests if r.chat_id == chat_id]


def text_calls(telegram: FakeTelegram, chat_id: int = CHAT) -> list[RecordedRequest]:
    return [r for r in chat_calls(telegram, chat_id) if r.method in TEXT_METHODS]


def words_of(messages: Sequence[FakeMessage], pattern: str = r"\bw\d+\b") -> list[str]:
    return re.findall(pattern, "\n".join(m.text or "" for m in messages))


async def stream_in_steps(
    stream: ReplyStream,
    clock: ScaledClock,
    parts: Sequence[str],
    pause: float,
    start: str = "",
) -> str:
    """Feed the answer part by part, `pause` bot-seconds apart, as an agent would (after
    `start`, the text already fed); returns the parts' text."""
    source = start
    for part in parts:
        source += part
        stream.update(source)
        await clock.sleep(pause)
    return source[len(start) :]


async def first_message(telegram: FakeTelegram, chat_id: int = CHAT) -> FakeMessage:
    """Wait until the answer's first message is on screen."""
    message = await telegram.wait_for(lambda: telegram.last_message(chat_id))
    assert message is not None
    return message


async def finish(stream: ReplyStream, source: str, **kwargs: Any) -> list[int]:
    return await asyncio.wait_for(stream.finish(source, **kwargs), timeout=20)


def assert_clean(telegram: FakeTelegram) -> None:
    """No 429 was provoked, nothing was sent inside a 429 window."""
    assert telegram.violations_during_penalty == 0, telegram.dump()
    assert all(r.status != 429 for r in telegram.requests), telegram.dump()


# --- coalescing and the final state ---------------------------------------------------------------


async def test_rapid_updates_are_coalesced_and_the_final_text_lands(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    words = [f"w{i}" for i in range(100)]
    start = clock.now()

    for count in range(1, 101):
        stream.update(" ".join(words[:count]))
        await asyncio.sleep(0)  # the writer may run between any two updates
    ids = await finish(stream, " ".join(words))

    assert telegram.visible_texts(CHAT) == [" ".join(words)]
    assert ids == [m.message_id for m in telegram.messages(CHAT)]
    calls = text_calls(telegram)
    elapsed = clock.now() - start
    assert len(calls) <= min(10, 3 + elapsed), f"{len(calls)} calls:\n{telegram.dump()}"
    texts = [c.params["text"] for c in calls]
    assert all(a != b for a, b in itertools.pairwise(texts)), "no identical re-send"
    assert_clean(telegram)


async def test_the_text_grows_in_one_message(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()

    source = await stream_in_steps(stream, clock, [f"w{i} " for i in range(12)], pause=0.6)
    await finish(stream, source)

    (message,) = telegram.messages(CHAT)
    assert message.text == source.strip()
    assert message.edits >= 3, "the user saw the answer grow"
    assert_clean(telegram)


async def test_finish_appends_the_footer_and_buttons_to_the_last_page(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["Hello ", "**world**"], pause=0.5)
    buttons = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="👍", callback_data="rate:1")]]
    )

    ids = await finish(stream, source, footer=FOOTER, markup=buttons)

    (message,) = telegram.messages(CHAT)
    assert ids == [message.message_id]
    assert message.text == f"Hello world\n\n{FOOTER.text}"
    assert [(e["type"], e["offset"], e["length"]) for e in message.entities] == [("bold", 6, 5)]
    assert message.reply_markup is not None
    assert message.reply_markup["inline_keyboard"][0][0]["text"] == "👍"


async def test_footer_gets_its_own_message_when_the_last_page_is_full(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = "a " * 2045  # 4089 characters shown: no room for a separator and the footer

    ids = await finish(stream, source, footer=FOOTER)

    messages = telegram.messages(CHAT)
    assert ids == [m.message_id for m in messages]
    assert [m.text for m in messages] == [source.strip(), FOOTER.text]


async def test_a_long_answer_spans_several_messages_without_loss(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    parts = [f"w{i} " + ("\n\n" if i % 50 == 49 else "") for i in range(2500)]
    chunks = ["".join(parts[i : i + 100]) for i in range(0, len(parts), 100)]

    source = await stream_in_steps(stream, clock, chunks, pause=0.3)
    ids = await finish(stream, source, footer=FOOTER)

    messages = telegram.messages(CHAT)
    assert len(messages) >= 3
    assert ids == [m.message_id for m in messages]
    assert words_of(messages) == [f"w{i}" for i in range(2500)]
    assert (messages[-1].text or "").endswith(FOOTER.text)
    assert_clean(telegram)


# --- Telegram says no -----------------------------------------------------------------------------


async def test_rejected_entities_switch_the_stream_to_plain_text(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["**Hello** "], pause=0.8)
    await first_message(telegram)
    # Entities Telegram cannot parse fail whatever the method: the edit, then the re-send.
    for method in ("editMessageText", "sendMessage"):
        telegram.fail_next(
            method,
            status=400,
            description="Bad Request: can't parse entities: Unsupported start tag at byte offset 3",
        )

    parts = ["there, ", "`code` ", "and ", "more ", "words."]
    source += await stream_in_steps(stream, clock, parts, pause=0.8, start=source)
    await finish(stream, source)

    assert telegram.visible_texts(CHAT) == [render_markdown(source).text]
    rejected = max(i for i, r in enumerate(telegram.requests) if r.status == 400)
    later = [r for r in telegram.requests[rejected + 1 :] if r.method in TEXT_METHODS]
    assert later, "the stream went on after the rejection"
    assert all(not r.params.get("entities") for r in later), "no entities after a rejection"


async def test_a_message_the_user_deleted_is_sent_again(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["First ", "words "], pause=0.6)
    first = await first_message(telegram)
    first.deleted = True  # the user deleted the message while the answer was growing

    source = await stream_in_steps(stream, clock, ["and ", "the ", "rest."], pause=0.6)
    ids = await finish(stream, source)

    (message,) = telegram.messages(CHAT)
    assert message.message_id != first.message_id
    assert message.text == source.strip()
    assert ids == [message.message_id]
    assert any(r.description == ERR_EDIT_NOT_FOUND for r in telegram.requests)


async def test_a_deleted_formatted_message_still_gets_the_whole_answer(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["**Bold** ", "start "], pause=0.6)
    first = await first_message(telegram)
    first.deleted = True

    source = await stream_in_steps(stream, clock, ["and ", "the ", "rest."], pause=0.6)
    ids = await finish(stream, source)

    (message,) = telegram.messages(CHAT)
    assert message.text == render_markdown(source).text
    assert ids == [message.message_id]


async def test_edit_not_found_answer_is_handled_like_a_deleted_message(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["First ", "words "], pause=0.6)
    await first_message(telegram)
    telegram.fail_next("editMessageText", status=400, description=ERR_EDIT_NOT_FOUND)

    source = await stream_in_steps(stream, clock, ["and ", "the ", "rest."], pause=0.6)
    ids = await finish(stream, source)

    assert telegram.last_message(CHAT) is not None
    assert telegram.visible_texts(CHAT)[-1] == source.strip()
    assert ids == [telegram.messages(CHAT)[-1].message_id]


async def test_a_chat_that_blocked_the_bot_fails_the_stream_without_hanging(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    telegram.block(CHAT)
    stream = new_stream(CHAT)
    stream.start()

    source = await stream_in_steps(stream, clock, ["Hello ", "there"], pause=0.5)
    ids = await finish(stream, source, footer=FOOTER)

    assert stream.failure is not None
    assert ids == []
    assert telegram.messages(CHAT) == []
    assert len(chat_calls(telegram)) <= 4, "the bot stops calling a chat that blocked it"


async def test_blocking_the_bot_mid_answer_stops_the_stream(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["Hello ", "there "], pause=0.6)
    first = await first_message(telegram)
    telegram.block(CHAT)
    blocked_at = len(telegram.requests)

    source = await stream_in_steps(stream, clock, [f"w{i} " for i in range(10)], pause=0.5)
    ids = await finish(stream, source, footer=FOOTER)

    assert stream.failure is not None
    assert ids == [first.message_id]
    assert len(telegram.requests) - blocked_at <= 2, telegram.dump()


async def test_after_a_429_nothing_is_sent_until_retry_after_and_the_final_text_lands(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    source = await stream_in_steps(stream, clock, ["One "], pause=0.5)
    await first_message(telegram)
    telegram.fail_next("editMessageText", status=429, retry_after=3)

    source = await stream_in_steps(stream, clock, [f"w{i} " for i in range(10)], pause=0.4)
    await finish(stream, source, footer=FOOTER)

    assert telegram.visible_texts(CHAT) == [f"{source.strip()}\n\n{FOOTER.text}"]
    assert telegram.violations_during_penalty == 0, telegram.dump()
    flood = next(r for r in telegram.requests if r.status == 429)
    after = [r for r in chat_calls(telegram) if r.time > flood.time]
    assert after, "the stream went on after the window"
    assert min(r.time for r in after) - flood.time >= 3.0


# --- typing ---------------------------------------------------------------------------------------


async def test_typing_is_shown_until_the_first_text_and_never_after(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    await clock.sleep(20)  # the agent thinks for 20 s: "typing…" must not lapse meanwhile

    source = await stream_in_steps(stream, clock, [f"w{i} " for i in range(12)], pause=1.0)
    await finish(stream, source)

    calls = chat_calls(telegram)
    first_text = next(i for i, r in enumerate(calls) if r.method == "sendMessage")
    before = [r for r in calls[:first_text] if r.method == "sendChatAction"]
    assert all(r.params["action"] == "typing" for r in before)
    # Telegram shows "typing…" for 5 s: it is repeated before it lapses, until the text is there
    # (the median tolerates the scaled clock's jitter on a loaded machine).
    shown_at = [r.time for r in before] + [calls[first_text].time]
    gaps = sorted(b - a for a, b in itertools.pairwise(shown_at))
    assert len(before) >= 4
    assert gaps[len(gaps) // 2] < 5.0, gaps
    assert gaps[-1] < 6.0, gaps
    assert [r for r in calls[first_text:] if r.method == "sendChatAction"] == []


async def test_typing_comes_before_a_fast_first_text(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    await clock.sleep(0.5)

    source = await stream_in_steps(stream, clock, ["Quick ", "answer."], pause=0.5)
    await finish(stream, source)

    methods = [r.method for r in chat_calls(telegram)]
    assert methods[0] == "sendChatAction"
    assert "sendChatAction" not in methods[1:]
    assert_clean(telegram)


async def test_in_a_group_typing_is_spent_only_on_an_agent_slow_to_start(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    """A group has 20 calls a minute for everything; an answer that starts within a second
    needs no "typing…" first."""
    fast = new_stream(GROUP)
    fast.start()
    await clock.sleep(0.3)
    await finish(fast, await stream_in_steps(fast, clock, ["Quick ", "answer."], pause=0.3))
    fast_methods = [r.method for r in chat_calls(telegram, GROUP)]

    slow = new_stream(GROUP - 1)
    slow.start()
    await clock.sleep(3.0)
    await finish(slow, await stream_in_steps(slow, clock, ["Slow ", "answer."], pause=0.3))
    slow_methods = [r.method for r in chat_calls(telegram, GROUP - 1)]

    assert "sendChatAction" not in fast_methods
    assert fast_methods[0] == "sendMessage"
    assert slow_methods[0] == "sendChatAction"
    assert "sendChatAction" not in slow_methods[1:]


async def test_in_drafts_thinking_is_spent_only_on_an_agent_slow_to_start(
    sender: ChatSender, telegram: FakeTelegram, clock: ScaledClock
) -> None:
    """Every call counts against the bot-wide budget; an answer that starts within a second
    needs no "Thinking…" draft first."""
    drafts = DraftSupport(True)
    shown: dict[str, list[str]] = {}
    for name, chat_id, wait in (("fast", CHAT, 0.3), ("slow", CHAT + 1, 3.0)):
        stream = ReplyStream(sender, Target(chat_id), clock, draft_id=7, drafts=drafts)
        stream.start()
        try:
            await clock.sleep(wait)
            source = await stream_in_steps(stream, clock, ["An ", "answer."], pause=0.3)
            await finish(stream, source)
        finally:
            await stream.close()
        shown[name] = [
            r.params.get("text", "")
            for r in chat_calls(telegram, chat_id)
            if r.method == "sendMessageDraft"
        ]

    assert shown["fast"], "the fast answer still grew in a draft"
    assert "" not in shown["fast"], "no placeholder before a fast first text"
    assert shown["slow"][0] == "", "a slow agent gets the 'Thinking…' placeholder"
    assert "" not in shown["slow"][1:]


# --- entities -------------------------------------------------------------------------------------


async def test_an_entity_heavy_answer_never_exceeds_100_entities_per_message(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(CHAT)
    stream.start()
    parts = [f"**w{i}** `c{i}` " for i in range(300)]
    chunks = ["".join(parts[i : i + 30]) for i in range(0, len(parts), 30)]

    source = await stream_in_steps(stream, clock, chunks, pause=0.4)
    await finish(stream, source, footer=FOOTER)

    assert telegram.entities_truncated == 0
    for call in text_calls(telegram):
        assert len(call.params.get("entities") or []) <= 100
    messages = telegram.messages(CHAT)
    assert len(messages) >= 6
    assert words_of(messages) == [f"w{i}" for i in range(300)]
    assert sum(len(m.entities) for m in messages) == 600, "every word kept its formatting"
    assert_clean(telegram)


async def test_group_answer_stays_within_20_calls_a_minute(
    new_stream: Callable[[int], ReplyStream], telegram: FakeTelegram, clock: ScaledClock
) -> None:
    stream = new_stream(GROUP)
    stream.start()

    source = await stream_in_steps(stream, clock, [f"w{i} " for i in range(40)], pause=1.0)
    await finish(stream, source)

    assert telegram.visible_texts(GROUP) == [source.strip()]
    times = [r.time for r in chat_calls(telegram, GROUP)]
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 60) <= 20
    assert_clean(telegram)
