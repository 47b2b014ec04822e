"""End-to-end harness: the real application from `create_app`, polling a fake Bot API, talking to
a fake Dify (or any fake agents) over httpx, with time sped up.

Only the seams are fake: aiogram's session (FakeTelegramSession over FakeTelegram), the agents'
HTTP transport (FakeDify, or `Harness.transport`, e.g. a `HostRouter` over several fakes), Redis
(fakeredis, or the real server where a test asks for it), and the clock (ScaledClock: one bot
second lasts 1/SPEEDUP of a real second, and FakeTelegram's flood windows run on the same clock,
so pacing and `retry_after` keep their real proportions).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import pytest
from aiogram.types import Update
from pydantic import SecretStr

from bot.app import Relaygram, create_app
from bot.config import AgentsConfig, Settings, parse_agents
from bot.services.access import AccessService, Decision
from bot.streaming.clock import ScaledClock
from storage import ChatScope, Storage
from tests.fakes.dify import FakeApp, FakeDify
from tests.fakes.telegram import (
    FakeMessage,
    FakeTelegram,
    FakeTelegramServer,
    FakeTelegramSession,
    FloodLimits,
    UpdateDict,
)

SPEEDUP = 20.0
BOT_TOKEN = "42:TEST-TOKEN-e2e"
BOT_ID = 42
DIFY_KEY = "app-test"


def agents_config(**overrides: Any) -> AgentsConfig:
    support: dict[str, Any] = {
        "platform": "dify",
        "title": "Support",
        "base_url": "http://dify.test/v1",
        "api_key": DIFY_KEY,
    }
    support.update(overrides)
    return parse_agents({"default": "support", "agents": {"support": support}}, {})


@dataclass
class Harness:
    telegram: FakeTelegram
    dify: FakeDify
    clock: ScaledClock
    storage: Storage
    app: Relaygram | None = None
    _polling: asyncio.Task[None] | None = None
    _http: httpx.AsyncClient | None = None
    user_id: int = 1001
    extra_agents: dict[str, Any] = field(default_factory=dict)
    # The agents' HTTP transport; None: the `dify` fake's own.
    transport: httpx.AsyncBaseTransport | None = None

    async def start(
        self,
        config: AgentsConfig | None = None,
        *,
        telegram_api_url: str | None = None,
        stream_mode: str = "edit",
        poll: bool = True,
        agents_loader: Callable[[], AgentsConfig] | None = None,
        **settings: Any,
    ) -> Relaygram:
        """Build and start the app. With `telegram_api_url` the bot talks to the fake Bot API
        over real HTTP (aiogram's own AiohttpSession), as `TELEGRAM_API_URL` makes it do."""
        self._http = httpx.AsyncClient(transport=self.transport or self.dify.transport())
        app_settings = Settings(
            bot_token=SecretStr(BOT_TOKEN),
            telegram_api_url=telegram_api_url or "https://api.telegram.org",
            stream_mode=stream_mode,
            _env_file=None,
            **settings,
        )
        self.app = await create_app(
            app_settings,
            config or agents_config(),
            session=None if telegram_api_url else FakeTelegramSession(self.telegram),
            storage=self.storage,
            http=self._http,
            clock=self.clock,
            agents_loader=agents_loader,
        )
        if poll:
            polls = len(self.telegram.calls("getUpdates"))  # an earlier app's count too
            self._polling = asyncio.create_task(
                self.app.dispatcher.start_polling(
                    self.app.bot, handle_signals=False, close_bot_session=False, polling_timeout=1
                )
            )
            # Start-up (the commands menu) is done when this app's first long poll begins.
            await self.telegram.wait_for(lambda: len(self.telegram.calls("getUpdates")) > polls)
        return self.app

    async def stop(self) -> None:
        if self.app is not None and self._polling is not None:
            with contextlib.suppress(RuntimeError):
                await self.app.dispatcher.stop_polling()
            await asyncio.wait_for(self._polling, 30)
        if self.app is not None:
            await self.app.aclose()
        if self._http is not None:
            await self._http.aclose()
        self.app = None
        self._polling = None

    # --- the user's side ------------------------------------------------------------------------

    def say(self, text: str, *, chat_id: int | None = None, **kwargs: Any) -> UpdateDict:
        chat = chat_id if chat_id is not None else self.user_id
        return self.telegram.push_update(self.telegram.user_text(chat, text, **kwargs))

    def deliver(self, update: dict[str, Any]) -> asyncio.Task[None]:
        """Hand an update straight to this app's Dispatcher (as a webhook replica gets it); the
        task ends when the update is handled and every answer of this app has finished."""
        app = self.app
        assert app is not None
        bot = app.bot

        async def handle() -> None:
            await app.dispatcher.feed_update(
                bot, Update.model_validate(update, context={"bot": bot})
            )
            await app.chat_service.wait_idle()

        return asyncio.create_task(handle())

    def press(self, message_id: int, data: str, *, chat_id: int | None = None) -> str:
        chat = chat_id if chat_id is not None else self.user_id
        update = self.telegram.push_update(self.telegram.callback(chat, message_id, data))
        return update.callback_query_id

    def texts(self, chat_id: int | None = None) -> list[str]:
        return self.telegram.visible_texts(chat_id if chat_id is not None else self.user_id)

    async def until(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        return await self.telegram.wait_for(predicate, within)

    async def until_settled(self, within: float = 10.0) -> None:
        """Wait until every update pushed so far has been fetched and fully handled (aiogram
        handles the updates of one batch concurrently, in no particular order)."""
        app = self.app
        assert app is not None
        tasks = app.dispatcher._handle_update_tasks  # aiogram keeps its handler tasks here

        def settled() -> bool:
            return not self.telegram.pending_updates and not tasks and app.chat_service.idle

        await self.until(settled, within)

    async def until_idle(self, chat_id: int | None = None, within: float = 10.0) -> None:
        """Wait until no answer is running in the chat and the last call has settled."""
        app = self.app
        assert app is not None

        scope = ChatScope(BOT_ID, chat_id if chat_id is not None else self.user_id)

        def idle() -> bool:
            return not app.chat_service.is_busy(scope)

        await self.until(idle, within)

    def callback_answers(self) -> list[str]:
        return [str(c.get("text", "")) for c in self.telegram.answered_callbacks]


def slow_access_check(monkeypatch: pytest.MonkeyPatch, slow: Callable[[str], bool]) -> None:
    """Make the access check of the questions `slow` picks 0.2 s slower: aiogram handles the
    updates of one batch concurrently, so without ordering a later message would overtake."""
    check = AccessService.check_question

    async def slower(self: AccessService, bot_id: int, user_id: int, question: str) -> Decision:
        if slow(question):
            await asyncio.sleep(0.2)
        return await check(self, bot_id, user_id, question)

    monkeypatch.setattr(AccessService, "check_question", slower)


# --- reading what the user sees ----------------------------------------------------------------


def bot_messages(h: Harness, chat_id: int | None = None) -> list[FakeMessage]:
    return h.telegram.messages(chat_id if chat_id is not None else h.user_id)


def buttons(message: FakeMessage | None) -> list[str]:
    assert message is not None
    markup: dict[str, Any] = message.reply_markup or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


def button_data(message: FakeMessage) -> list[str]:
    markup: dict[str, Any] = message.reply_markup or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


def finished(h: Harness, chat_id: int | None = None) -> FakeMessage | None:
    """The last bot message once it carries its final buttons (not the ⏹ of a growing answer)."""
    messages = bot_messages(h, chat_id)
    if messages and messages[-1].reply_markup and "⏹ Stop" not in buttons(messages[-1]):
        return messages[-1]
    return None


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(SPEEDUP)


@pytest.fixture
def telegram(clock: ScaledClock) -> FakeTelegram:
    return FakeTelegram(
        bot_id=BOT_ID, token=BOT_TOKEN, clock=clock.now, limits=FloodLimits.telegram()
    )


@pytest.fixture
def dify() -> FakeDify:
    return FakeDify(FakeApp(api_key=DIFY_KEY, name="Support app"))


@pytest.fixture
async def h(telegram: FakeTelegram, dify: FakeDify, clock: ScaledClock) -> AsyncIterator[Harness]:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    harness = Harness(telegram=telegram, dify=dify, clock=clock, storage=Storage.on_redis(redis))
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()
        await redis.aclose()


@pytest.fixture
async def h_http(
    telegram: FakeTelegram, dify: FakeDify, clock: ScaledClock
) -> AsyncIterator[Harness]:
    """Like `h`, but the bot reaches the fake Bot API over HTTP via TELEGRAM_API_URL."""
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    harness = Harness(telegram=telegram, dify=dify, clock=clock, storage=Storage.on_redis(redis))
    async with FakeTelegramServer(telegram) as server:
        await harness.start(telegram_api_url=server.url)
        try:
            yield harness
        finally:
            await harness.stop()
            await redis.aclose()
