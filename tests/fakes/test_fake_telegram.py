"""Tests of the fake Bot API itself, through both front ends.

Every behaviour relaygram relies on is checked through a real ``aiogram.Bot``: once with the
in-process :class:`FakeTelegramSession` and once over HTTP with aiogram's real ``AiohttpSession``
pointed at :class:`FakeTelegramServer`. If the two ever disagree, the fake is lying somewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    MessageGenerationStopped,
    ReplyParameters,
)

from tests.fakes.telegram import (
    DEFAULT_TOKEN,
    ERR_NOT_MODIFIED,
    ERR_TEXT_EMPTY,
    ERR_TEXT_MUST_BE_NON_EMPTY,
    ERR_TOO_LONG,
    FakeTelegram,
    FakeTelegramServer,
    FakeTelegramSession,
    FloodLimits,
    ManualClock,
    RateLimit,
    feed,
    utf16_len,
)

PRIVATE = 1001
GROUP = -1002003004005


def spans(message: Message) -> list[tuple[str, int, int]]:
    """A message's entities as comparable tuples (parsed entities carry a bot context)."""
    return [(e.type, e.offset, e.length) for e in message.entities or []]


@dataclass
class Env:
    """A fake, its hand-driven clock and a real Bot talking to it through one front end."""

    fake: FakeTelegram
    clock: ManualClock
    bot: Bot
    front: str


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeTelegram:
    return FakeTelegram(clock=clock)


@pytest.fixture(params=["session", "http"])
async def env(
    request: pytest.FixtureRequest, fake: FakeTelegram, clock: ManualClock
) -> AsyncIterator[Env]:
    if request.param == "session":
        bot = Bot(DEFAULT_TOKEN, session=FakeTelegramSession(fake))
        try:
            yield Env(fake, clock, bot, "session")
        finally:
            await bot.session.close()
    else:
        async with FakeTelegramServer(fake) as server:
            session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
            bot = Bot(DEFAULT_TOKEN, session=session)
            try:
                yield Env(fake, clock, bot, "http")
            finally:
                await session.close()


# ------------------------------------------------------------------------------ messages


async def test_get_me(env: Env) -> None:
    me = await env.bot.get_me()
    assert (me.id, me.username, me.is_bot) == (777000111, "relaygram_test_bot", True)


async def test_send_then_edit(env: Env) -> None:
    bold = MessageEntity(type="bold", offset=0, length=5)
    sent = await env.bot.send_message(PRIVATE, "Hello world", entities=[bold])
    assert sent.message_id == 1
    assert sent.chat.type == "private"
    assert sent.from_user is not None
    assert sent.from_user.id == env.fake.bot_id
    assert spans(sent) == [("bold", 0, 5)]

    edited = await env.bot.edit_message_text(
        "Hello world, again", chat_id=PRIVATE, message_id=sent.message_id
    )
    assert isinstance(edited, Message)
    assert edited.text == "Hello world, again"
    assert edited.edit_date is not None

    second = await env.bot.send_message(PRIVATE, "second")
    assert second.message_id == 2
    assert env.fake.visible_texts(PRIVATE) == ["Hello world, again", "second"]
    first = env.fake.messages(PRIVATE)[0]
    assert [v.text for v in first.history] == ["Hello world", "Hello world, again"]
    assert first.edits == 1
    assert [r.method for r in env.fake.requests] == [
        "sendMessage",
        "editMessageText",
        "sendMessage",
    ]
    assert env.fake.calls("sendmessage", chat_id=PRIVATE)[0].params["text"] == "Hello world"


async def test_not_modified_edit_raises(env: Env) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="👍", callback_data="v1:up")]]
    )
    sent = await env.bot.send_message(PRIVATE, "same", reply_markup=keyboard)
    with pytest.raises(TelegramBadRequest) as caught:
        await env.bot.edit_message_text(
            "same", chat_id=PRIVATE, message_id=sent.message_id, reply_markup=keyboard
        )
    assert caught.value.message == ERR_NOT_MODIFIED
    # Telegram trims trailing whitespace, so this is "the same" too.
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await env.bot.edit_message_text(
            "same \n", chat_id=PRIVATE, message_id=sent.message_id, reply_markup=keyboard
        )
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await env.bot.edit_message_reply_markup(
            chat_id=PRIVATE, message_id=sent.message_id, reply_markup=keyboard
        )
    # Omitting reply_markup removes the keyboard: that is a modification.
    edited = await env.bot.edit_message_text("same", chat_id=PRIVATE, message_id=sent.message_id)
    assert isinstance(edited, Message)
    assert edited.reply_markup is None


async def test_edit_and_delete_unknown_messages(env: Env) -> None:
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await env.bot.edit_message_text("x", chat_id=PRIVATE, message_id=99)
    sent = await env.bot.send_message(PRIVATE, "bye")
    assert await env.bot.delete_message(PRIVATE, sent.message_id) is True
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await env.bot.delete_message(PRIVATE, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await env.bot.edit_message_text("x", chat_id=PRIVATE, message_id=sent.message_id)
    assert env.fake.messages(PRIVATE) == []
    assert env.fake.messages(PRIVATE, include_deleted=True)[0].deleted


async def test_empty_text(env: Env) -> None:
    with pytest.raises(TelegramBadRequest) as caught:
        await env.bot.send_message(PRIVATE, "")
    assert caught.value.message == ERR_TEXT_EMPTY
    with pytest.raises(TelegramBadRequest) as caught:
        await env.bot.send_message(PRIVATE, " \n ")
    assert caught.value.message == ERR_TEXT_MUST_BE_NON_EMPTY


async def test_too_long_counts_utf16(env: Env) -> None:
    emoji = "😀" * 2100
    assert len(emoji) == 2100
    assert utf16_len(emoji) == 4200
    with pytest.raises(TelegramBadRequest) as caught:
        await env.bot.send_message(PRIVATE, emoji)
    assert caught.value.message == ERR_TOO_LONG
    await env.bot.send_message(PRIVATE, "😀" * 2048)  # exactly 4096 code units
    await env.bot.send_message(PRIVATE, "a" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await env.bot.send_message(PRIVATE, "a" * 4097)
    sent = await env.bot.send_message(PRIVATE, "short")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await env.bot.edit_message_text(emoji, chat_id=PRIVATE, message_id=sent.message_id)


async def test_entity_validation(env: Env) -> None:
    text = "😀 hi"  # the emoji is one character but two UTF-16 code units
    assert (len(text), utf16_len(text)) == (4, 5)
    ok = await env.bot.send_message(
        PRIVATE, text, entities=[MessageEntity(type="bold", offset=3, length=2)]
    )
    assert spans(ok) == [("bold", 3, 2)]
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await env.bot.send_message(
            PRIVATE, text, entities=[MessageEntity(type="bold", offset=3, length=3)]
        )
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await env.bot.send_message(
            PRIVATE, text, entities=[MessageEntity(type="bold", offset=0, length=0)]
        )
    with pytest.raises(TelegramBadRequest, match="incorrect offset -1"):
        await env.bot.send_message(
            PRIVATE, text, entities=[MessageEntity(type="bold", offset=-1, length=2)]
        )
    with pytest.raises(TelegramBadRequest, match="in a middle of a UTF-16 symbol"):
        await env.bot.send_message(
            PRIVATE, text, entities=[MessageEntity(type="italic", offset=1, length=2)]
        )
    with pytest.raises(TelegramBadRequest, match="Unsupported type specified"):
        await env.bot.send_message(
            PRIVATE, text, entities=[MessageEntity(type="sparkles", offset=0, length=2)]
        )
    with pytest.raises(TelegramBadRequest, match='Can\'t find field "url"'):
        await env.bot.send_message(
            PRIVATE, text, entities=[MessageEntity(type="text_link", offset=0, length=2)]
        )


async def test_more_than_100_entities_are_dropped(env: Env) -> None:
    text = "ab" * 150
    entities = [MessageEntity(type="bold", offset=2 * i, length=1) for i in range(150)]
    sent = await env.bot.send_message(PRIVATE, text, entities=entities)
    assert len(spans(sent)) == 100
    assert env.fake.entities_truncated == 1


async def test_lenient_entities_are_clamped_like_telegram(env: Env) -> None:
    env.fake.strict_entities = False
    sent = await env.bot.send_message(
        PRIVATE,
        "hello  ",
        entities=[
            MessageEntity(type="bold", offset=0, length=40),
            MessageEntity(type="italic", offset=1, length=0),
        ],
    )
    assert sent.text == "hello"
    assert spans(sent) == [("bold", 0, 5)]


async def test_parse_mode_plain_text_only(env: Env) -> None:
    sent = await env.bot.send_message(PRIVATE, "plain words", parse_mode="MarkdownV2")
    assert sent.text == "plain words"
    with pytest.raises(TelegramBadRequest, match=r"Character '\.' is reserved"):
        await env.bot.send_message(PRIVATE, "end.", parse_mode="MarkdownV2")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await env.bot.send_message(PRIVATE, "<b>x</b>", parse_mode="HTML")


async def test_reply_parameters_and_threads(env: Env) -> None:
    env.fake.register_chat(GROUP, "supergroup", is_forum=True)
    question = env.fake.user_text(GROUP, "question", thread_id=7)
    answer = await env.bot.send_message(
        GROUP,
        "answer",
        message_thread_id=7,
        reply_parameters=ReplyParameters(message_id=question.message_id),
    )
    assert answer.message_thread_id == 7
    assert answer.is_topic_message
    assert answer.reply_to_message is not None
    assert answer.reply_to_message.text == "question"
    assert env.fake.visible_texts(GROUP, thread_id=7) == ["answer"]
    assert env.fake.visible_texts(GROUP, include_user=True) == ["question", "answer"]
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await env.bot.send_message(GROUP, "x", reply_parameters=ReplyParameters(message_id=999))
    sent = await env.bot.send_message(
        GROUP,
        "x",
        reply_parameters=ReplyParameters(message_id=999, allow_sending_without_reply=True),
    )
    assert sent.reply_to_message is None


async def test_chat_action_and_blocked_user(env: Env) -> None:
    assert await env.bot.send_chat_action(PRIVATE, "typing") is True
    env.fake.block(PRIVATE)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await env.bot.send_message(PRIVATE, "hello?")


# ------------------------------------------------------------------------------ flood control


async def test_private_chat_flood_limit(env: Env) -> None:
    env.fake.limits = FloodLimits(private_chat=RateLimit(1, 1.0))
    await env.bot.send_message(PRIVATE, "one")
    with pytest.raises(TelegramRetryAfter) as caught:
        await env.bot.send_chat_action(PRIVATE, "typing")  # every call spends the chat budget
    assert caught.value.retry_after == 1
    assert env.fake.violations_during_penalty == 0

    env.clock.advance(0.5)  # still inside the window: calling again is a violation
    with pytest.raises(TelegramRetryAfter):
        await env.bot.send_message(PRIVATE, "two")
    assert env.fake.violations_during_penalty == 1

    env.clock.advance(0.5)
    await env.bot.send_message(PRIVATE, "two")
    await env.bot.send_message(PRIVATE + 1, "another chat has its own budget")
    assert env.fake.visible_texts(PRIVATE) == ["one", "two"]


async def test_group_flood_limit(env: Env) -> None:
    env.fake.limits = FloodLimits.telegram()
    env.fake.register_chat(GROUP, "supergroup")
    sent = await env.bot.send_message(GROUP, "0")
    for i in range(1, 20):
        env.clock.advance(1.0)
        await env.bot.edit_message_text(str(i), chat_id=GROUP, message_id=sent.message_id)
    env.clock.advance(0.5)  # 19.5 s after the first call; it leaves the window at 60 s
    with pytest.raises(TelegramRetryAfter) as caught:
        await env.bot.send_message(GROUP, "21st")
    assert caught.value.retry_after == 41
    assert env.fake.requests[-1].description == "Too Many Requests: retry after 41"
    env.clock.advance(41)
    await env.bot.send_message(GROUP, "21st")
    assert env.fake.violations_during_penalty == 0


async def test_bot_wide_limit(env: Env) -> None:
    env.fake.limits = FloodLimits(bot_wide=RateLimit(3, 1.0))
    for chat in range(1, 4):
        await env.bot.send_message(chat, "hi")
    with pytest.raises(TelegramRetryAfter) as caught:
        await env.bot.get_me()
    assert caught.value.retry_after == 1


async def test_injected_faults(env: Env) -> None:
    env.fake.fail_next("sendMessage", status=429, retry_after=3, chat_id=PRIVATE)
    with pytest.raises(TelegramRetryAfter) as caught:
        await env.bot.send_message(PRIVATE, "x")
    assert caught.value.retry_after == 3
    await env.bot.send_message(PRIVATE + 1, "other chat unaffected")
    env.clock.advance(2.9)
    with pytest.raises(TelegramRetryAfter) as caught:
        await env.bot.send_message(PRIVATE, "too early")
    assert caught.value.retry_after == 1
    assert env.fake.violations_during_penalty == 1
    env.clock.advance(1.0)
    await env.bot.send_message(PRIVATE, "x")

    env.fake.fail_next("sendMessage", status=502)
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await env.bot.send_message(PRIVATE, "x")
    env.fake.fail_next("editMessageText", status=400, description="Bad Request: boom", times=2)
    for _ in range(2):
        with pytest.raises(TelegramBadRequest, match="boom"):
            await env.bot.edit_message_text("y", chat_id=PRIVATE, message_id=1)
    await env.bot.send_message(PRIVATE, "recovered")


# ------------------------------------------------------------------------------ drafts


async def test_drafts_private_only(env: Env) -> None:
    assert await env.bot.send_message_draft(PRIVATE, draft_id=5, text="") is True
    draft = env.fake.draft(PRIVATE)
    assert draft is not None
    assert draft.text == ""
    await env.bot.send_message_draft(PRIVATE, draft_id=5, text="Thinking about it", can_stop=True)
    draft = env.fake.draft(PRIVATE)
    assert draft is not None
    assert (draft.text, draft.can_stop, draft.history) == (
        "Thinking about it",
        True,
        ["", "Thinking about it"],
    )

    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await env.bot.send_message_draft(PRIVATE, draft_id=5, text="😀" * 2049)
    with pytest.raises(TelegramBadRequest, match="TEXTDRAFT_PEER_INVALID"):
        await env.bot.send_message_draft(GROUP, draft_id=5, text="nope")

    await env.bot.send_message(PRIVATE, "final answer")
    assert env.fake.draft(PRIVATE) is None

    await env.bot.send_message_draft(PRIVATE, draft_id=6, text="expires")
    env.clock.advance(31)
    assert env.fake.draft(PRIVATE) is None


async def test_drafts_unsupported(env: Env) -> None:
    env.fake.drafts_supported = False
    with pytest.raises(TelegramBadRequest, match="method is not available"):
        await env.bot.send_message_draft(PRIVATE, draft_id=1, text="x")


# ------------------------------------------------------------------------------ callbacks, commands


async def test_callback_answer(env: Env) -> None:
    sent = await env.bot.send_message(
        PRIVATE,
        "rate me",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="👍", callback_data="v1:up")]]
        ),
    )
    update = env.fake.callback(PRIVATE, sent.message_id, "v1:up")
    assert update["callback_query"]["message"]["text"] == "rate me"
    assert await env.bot.answer_callback_query(update.callback_query_id, text="thanks") is True
    assert env.fake.answered_callbacks[0]["text"] == "thanks"
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await env.bot.answer_callback_query(update.callback_query_id)


async def test_commands_per_scope(env: Env) -> None:
    await env.bot.set_my_commands([BotCommand(command="new", description="New conversation")])
    await env.bot.set_my_commands(
        [BotCommand(command="agent", description="Switch agent")],
        scope=BotCommandScopeChat(chat_id=PRIVATE),
        language_code="ru",
    )
    assert env.fake.commands() == [{"command": "new", "description": "New conversation"}]
    assert env.fake.commands(BotCommandScopeChat(chat_id=PRIVATE), "ru")[0]["command"] == "agent"
    assert env.fake.commands(BotCommandScopeAllPrivateChats()) == []
    got = await env.bot.get_my_commands(
        scope=BotCommandScopeChat(chat_id=PRIVATE), language_code="ru"
    )
    assert [c.command for c in got] == ["agent"]
    await env.bot.delete_my_commands()
    assert env.fake.commands() == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await env.bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])


# ------------------------------------------------------------------------------ updates


async def test_long_polling_delivers_pushed_update(env: Env) -> None:
    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}")

    polling = asyncio.create_task(
        dp.start_polling(env.bot, handle_signals=False, close_bot_session=False)
    )
    try:
        await env.fake.wait_for(lambda: env.fake.calls("getUpdates"))
        env.fake.push_update(env.fake.user_text(PRIVATE, "hello"))
        await env.fake.wait_for(lambda: env.fake.visible_texts(PRIVATE) == ["echo: hello"])
    finally:
        await dp.stop_polling()
        await polling
    # aiogram asked only for the update types it has handlers for.
    assert env.fake.allowed_updates == {"message"}


async def test_stopped_message_generation_reaches_handler(env: Env) -> None:
    dp = Dispatcher()
    stopped: list[tuple[int, int, int | None]] = []

    @dp.stopped_message_generation()
    async def on_stop(event: MessageGenerationStopped) -> None:
        stopped.append((event.chat.id, event.draft_id, event.message_thread_id))

    await env.bot.send_message_draft(PRIVATE, draft_id=9, text="partial", can_stop=True)
    polling = asyncio.create_task(
        dp.start_polling(env.bot, handle_signals=False, close_bot_session=False)
    )
    try:
        env.fake.push_update(env.fake.stopped_generation(PRIVATE, 9))
        await env.fake.wait_for(lambda: stopped)
    finally:
        await dp.stop_polling()
        await polling
    assert stopped == [(PRIVATE, 9, None)]
    assert env.fake.draft(PRIVATE) is None  # not keep_on_stop: the draft disappears

    await feed(dp, env.bot, env.fake.stopped_generation(PRIVATE, 10, thread_id=3))
    assert stopped[-1] == (PRIVATE, 10, 3)


async def test_feed_callback_and_photo(env: Env) -> None:
    dp = Dispatcher()
    seen: list[str] = []

    @dp.callback_query()
    async def on_callback(query: CallbackQuery) -> None:
        seen.append(f"cb:{query.data}")
        await query.answer()

    @dp.message()
    async def on_message(message: Message) -> None:
        seen.append(f"photo:{message.caption}" if message.photo else f"other:{message.sticker}")

    sent = await env.bot.send_message(PRIVATE, "pick")
    await feed(dp, env.bot, env.fake.callback(PRIVATE, sent.message_id, "v1:x"))
    await feed(dp, env.bot, env.fake.user_photo(PRIVATE, caption="look"))
    assert seen == ["cb:v1:x", "photo:look"]
    assert len(env.fake.answered_callbacks) == 1
    sticker = env.fake.user_sticker(PRIVATE)
    assert sticker["message"]["sticker"]["emoji"] == "👍"


async def test_wait_for_timeout_dumps_requests(env: Env) -> None:
    await env.bot.send_message(PRIVATE, "something")
    with pytest.raises(AssertionError, match="sendMessage chat=1001"):
        await env.fake.wait_for(lambda: False, timeout=0.05)


# ------------------------------------------------------------------------------ raw protocol


async def test_unknown_method_is_404(fake: FakeTelegram) -> None:
    status, body = await fake.handle("sendTelepathy", {"chat_id": "1"})
    assert (status, body) == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )


async def test_http_server_protocol(fake: FakeTelegram) -> None:
    async with FakeTelegramServer(fake) as server, aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/bot{DEFAULT_TOKEN}/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["description"] == "Not Found: method not found"
        async with http.get(f"{server.url}/bot1:WRONG/getMe") as resp:
            assert resp.status == 401
            assert await resp.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        payload = {"chat_id": PRIVATE, "text": "json body", "entities": []}
        async with http.post(f"{server.url}/bot{DEFAULT_TOKEN}/sendMessage", json=payload) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"]["text"] == "json body"
        form = {"chat_id": str(PRIVATE), "text": "123"}
        async with http.post(f"{server.url}/bot{DEFAULT_TOKEN}/sendMessage", data=form) as resp:
            assert (await resp.json())["result"]["text"] == "123"
        fake.fail_next("getMe", status=429, retry_after=7)
        async with http.get(f"{server.url}/bot{DEFAULT_TOKEN}/getMe") as resp:
            assert resp.status == 429
            assert await resp.json() == {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 7",
                "parameters": {"retry_after": 7},
            }


async def test_http_unknown_token_raises_unauthorized(fake: FakeTelegram) -> None:
    async with FakeTelegramServer(fake) as server:
        session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
        bot = Bot("7:OTHER", session=session)
        try:
            with pytest.raises(TelegramUnauthorizedError):
                await bot.get_me()
        finally:
            await session.close()


async def test_session_unknown_method_maps_to_not_found(fake: FakeTelegram) -> None:
    from aiogram.methods import GetChat

    bot = Bot(DEFAULT_TOKEN, session=FakeTelegramSession(fake))
    with pytest.raises(TelegramNotFound, match="method not found"):
        await bot(GetChat(chat_id=PRIVATE))


async def test_get_updates_conflict_and_webhook(fake: FakeTelegram) -> None:
    first = asyncio.create_task(fake.handle("getUpdates", {"timeout": "30"}))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(fake.handle("getUpdates", {"timeout": "0"}))
    assert (await first)[0] == 409
    assert (await second)[0] == 200
    status, body = await fake.handle("setWebhook", {"url": "https://example.test/hook"})
    assert (status, body["description"]) == (200, "Webhook was set")
    status, body = await fake.handle("getUpdates", {})
    assert status == 409
    assert "webhook is active" in body["description"]
    status, body = await fake.handle("deleteWebhook", {})
    assert body["description"] == "Webhook was deleted"
