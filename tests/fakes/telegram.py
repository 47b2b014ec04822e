"""A faithful fake of the Telegram Bot API, for relaygram's tests.

Why a fake and not mocks: relaygram's streaming layer lives or dies by how Telegram *reacts* —
"message is not modified" when an edit repeats the text, "message is too long" at 4097 UTF-16
code units, 429 with ``retry_after`` when a chat is flooded, drafts only in private chats. Mocks
that record calls cannot check any of that; a small state machine that behaves like the Bot API can.

There is ONE state machine, :class:`FakeTelegram`, and two front ends that reach it:

* :class:`FakeTelegramSession` — an aiogram ``BaseSession``. It serialises each method exactly
  like aiogram's ``AiohttpSession.build_form_data`` does and pushes the answer through aiogram's
  own ``check_response``, so handler tests get aiogram's real exception mapping
  (``TelegramRetryAfter``, ``TelegramBadRequest``...) without a socket.
* :class:`FakeTelegramServer` — an aiohttp app serving ``{url}/bot{token}/{method}`` on
  127.0.0.1, for end-to-end tests that point ``TELEGRAM_API_URL`` (aiogram's
  ``TelegramAPIServer.from_base``) at it and use the real ``AiohttpSession``.

Error descriptions are the ones the Bot API server (tdlib/telegram-bot-api + TDLib) produces;
where the fake is deliberately stricter than Telegram (``strict_entities``), the description says
so. The test plays the user through the update builders (:meth:`FakeTelegram.user_text`,
:meth:`FakeTelegram.callback`, ...) and reads the chat back through the recording helpers
(:meth:`FakeTelegram.messages`, :meth:`FakeTelegram.calls`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Literal, TypeVar, cast

from aiogram import Bot, Dispatcher
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import InputFile, TelegramObject, Update
from aiohttp import web

__all__ = [
    "DEFAULT_BOT_ID",
    "DEFAULT_TOKEN",
    "DEFAULT_USER_ID",
    "ERR_BLOCKED",
    "ERR_CANT_EDIT",
    "ERR_CHAT_NOT_FOUND",
    "ERR_DELETE_NOT_FOUND",
    "ERR_DRAFTS_UNAVAILABLE",
    "ERR_DRAFT_PEER_INVALID",
    "ERR_EDIT_NOT_FOUND",
    "ERR_METHOD_NOT_FOUND",
    "ERR_NOT_MODIFIED",
    "ERR_QUERY_INVALID",
    "ERR_REPLY_NOT_FOUND",
    "ERR_TEXT_EMPTY",
    "ERR_TEXT_MUST_BE_NON_EMPTY",
    "ERR_TOO_LONG",
    "ERR_UNAUTHORIZED",
    "TEXT_LIMIT",
    "ChatInfo",
    "FakeDraft",
    "FakeMessage",
    "FakeTelegram",
    "FakeTelegramServer",
    "FakeTelegramSession",
    "FloodLimits",
    "ManualClock",
    "MessageVersion",
    "RateLimit",
    "RecordedRequest",
    "UpdateDict",
    "decode_params",
    "feed",
    "utf16_len",
]

_T = TypeVar("_T")

DEFAULT_BOT_ID: Final = 777000111
DEFAULT_TOKEN: Final = "42:TEST"
DEFAULT_USER_ID: Final = 100200300
"""The user who writes in group chats when a builder is not given ``user_id``."""

TEXT_LIMIT: Final = 4096
"""Maximum message (and draft) text length, counted here in UTF-16 code units."""
MAX_ENTITIES: Final = 100
"""Telegram keeps the first 100 formatting entities of a message and silently drops the rest."""
DRAFT_TTL: Final = 30.0
"""A draft is an ephemeral 30-second preview: it disappears unless updated or replaced."""
MAX_RAW_TEXT_BYTES: Final = 1 << 15
"""The Bot API server rejects a ``text`` argument above 32 KiB before looking at it."""

# Descriptions exactly as the Bot API sends them (tdlib/telegram-bot-api, TDLib).
ERR_TEXT_EMPTY: Final = "Bad Request: message text is empty"
ERR_TEXT_MUST_BE_NON_EMPTY: Final = "Bad Request: text must be non-empty"
ERR_TOO_LONG: Final = "Bad Request: message is too long"
ERR_RAW_TEXT_TOO_LONG: Final = "Bad Request: text is too long"
ERR_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
ERR_EDIT_NOT_FOUND: Final = "Bad Request: message to edit not found"
ERR_DELETE_NOT_FOUND: Final = "Bad Request: message to delete not found"
ERR_REPLY_NOT_FOUND: Final = "Bad Request: message to be replied not found"
ERR_CANT_EDIT: Final = "Bad Request: message can't be edited"
ERR_NO_TEXT_TO_EDIT: Final = "Bad Request: there is no text in the message to edit"
ERR_QUERY_INVALID: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
ERR_CHAT_NOT_FOUND: Final = "Bad Request: chat not found"
ERR_CHAT_ID_EMPTY: Final = "Bad Request: chat_id is empty"
ERR_DRAFT_PEER_INVALID: Final = "Bad Request: TEXTDRAFT_PEER_INVALID"
ERR_DRAFTS_UNAVAILABLE: Final = "Bad Request: method is not available"
ERR_BLOCKED: Final = "Forbidden: bot was blocked by the user"
ERR_METHOD_NOT_FOUND: Final = "Not Found: method not found"
ERR_UNAUTHORIZED: Final = "Unauthorized"
ERR_INVALID_TOKEN: Final = "Unauthorized: invalid token specified"
ERR_GET_UPDATES_CONFLICT: Final = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
ERR_WEBHOOK_ACTIVE: Final = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)

# Methods whose target chat spends the chat's flood budget (and is frozen by its 429 window).
_CHAT_METHODS: Final = frozenset(
    {
        "sendmessage",
        "editmessagetext",
        "editmessagereplymarkup",
        "deletemessage",
        "sendchataction",
        "sendmessagedraft",
    }
)
# Long polling is not a "request" in the flood-control sense: counting it would make an idle
# polling loop eat the bot-wide budget that the test is trying to measure.
_UNLIMITED_METHODS: Final = frozenset({"getupdates"})

_CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "record_audio",
        "upload_audio",
        "upload_document",
        "choose_sticker",
        "find_location",
        "pick_up_location",
        "record_video_note",
        "upload_video_note",
        "cancel",
    }
)

# Entity types a bot may send; the Bot API silently drops the auto-detected ones.
_USER_ENTITY_TYPES: Final = frozenset(
    {
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "blockquote",
        "expandable_blockquote",
        "date_time",
    }
)
_AUTO_ENTITY_TYPES: Final = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bank_card_number",
    }
)

_INLINE_BUTTON_ACTIONS: Final = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)

# Fields the Bot API reads as JSON-serialised values; every other argument is a plain string.
_JSON_FIELDS: Final = frozenset(
    {
        "entities",
        "caption_entities",
        "reply_markup",
        "reply_parameters",
        "link_preview_options",
        "commands",
        "scope",
        "allowed_updates",
        "message_ids",
    }
)
_INT_FIELDS: Final = frozenset(
    {
        "chat_id",
        "message_id",
        "message_thread_id",
        "draft_id",
        "reply_to_message_id",
        "offset",
        "limit",
        "timeout",
        "cache_time",
        "max_connections",
        "user_id",
    }
)
_BOOL_FIELDS: Final = frozenset(
    {
        "disable_notification",
        "protect_content",
        "allow_paid_broadcast",
        "allow_sending_without_reply",
        "disable_web_page_preview",
        "can_stop",
        "keep_on_stop",
        "show_alert",
        "drop_pending_updates",
    }
)

_ALL_UPDATE_TYPES: Final = tuple(name for name in Update.model_fields if name != "update_id")
_DEFAULT_ALLOWED_UPDATES: Final = frozenset(_ALL_UPDATE_TYPES) - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}

_COMMAND_RE: Final = re.compile(r"^[a-z0-9_]+$")
_TOKEN_RE: Final = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_MDV2_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_FORMATTING: Final = frozenset("_*[]()~`|")


# --------------------------------------------------------------------------------------------
# Small public helpers
# --------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units: how Telegram measures text and entity offsets."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


class ManualClock:
    """A clock the test advances by hand, so flood-control tests run instantly and exactly.

    Pass it as ``FakeTelegram(clock=clock)`` (and to relaygram's throttler, if it takes one).
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward and return the new reading."""
        self.now += seconds
        return self.now


@dataclass(frozen=True)
class RateLimit:
    """At most ``max_calls`` accepted calls in any rolling ``window`` seconds."""

    max_calls: int
    window: float


@dataclass(frozen=True)
class Burst:
    """A token bucket: short bursts of up to ``capacity`` calls, then ``per_second`` on average.

    Telegram's FAQ for a single chat: "avoid sending more than one message per second. We may
    allow short bursts that go over this limit, but eventually you'll begin receiving 429
    errors." A rolling one-call-per-second window would forbid the bursts Telegram allows.
    """

    capacity: float
    per_second: float


@dataclass
class _BucketState:
    tokens: float
    updated: float


@dataclass(frozen=True)
class FloodLimits:
    """Which flood limits the fake enforces. All off by default so unrelated tests never see 429.

    ``private_chat``: per private chat, every chat-targeted call (send, edit, delete, chat action,
    draft). ``group_chat``: the same per group/supergroup/channel. ``bot_wide``: every call except
    ``getUpdates``. ``penalty_extension``: seconds added to a chat's 429 window for every call
    made inside it (Telegram lengthens penalties for bots that keep calling; 0 = only record it).
    """

    private_chat: RateLimit | Burst | None = None
    group_chat: RateLimit | Burst | None = None
    bot_wide: RateLimit | None = None
    penalty_extension: float = 0.0

    @classmethod
    def telegram(cls) -> FloodLimits:
        """Telegram's published limits: ~1/s per private chat (short bursts allowed), 20/min per
        group, 30/s per bot."""
        return cls(
            private_chat=Burst(capacity=3, per_second=1.0),
            group_chat=RateLimit(20, 60.0),
            bot_wide=RateLimit(30, 1.0),
        )


@dataclass
class RecordedRequest:
    """One call the bot made, as the fake saw it (params decoded to Python values)."""

    method: str
    params: dict[str, Any]
    chat_id: int | None
    time: float
    status: int = 0
    description: str | None = None
    during_penalty: bool = False
    """True when the call targeted a chat (or the bot) inside an active 429 ``retry_after``."""

    @property
    def ok(self) -> bool:
        return self.status == HTTPStatus.OK

    def summary(self) -> str:
        """One line for failure dumps."""
        shown = {k: v for k, v in self.params.items() if k != "chat_id"}
        text = json.dumps(shown, ensure_ascii=False, default=str)
        if len(text) > 160:
            text = text[:157] + "..."
        outcome = "ok" if self.ok else f"{self.status} {self.description}"
        return f"t={self.time:.3f} {self.method} chat={self.chat_id} {text} -> {outcome}"


@dataclass(frozen=True)
class MessageVersion:
    """One state of a message: the original or the result of an edit."""

    text: str | None
    entities: tuple[dict[str, Any], ...]
    reply_markup: dict[str, Any] | None
    at: float


@dataclass
class FakeMessage:
    """A message in a fake chat, sent by the bot (``from_bot``) or by the fake user."""

    chat_id: int
    message_id: int
    date: int
    from_bot: bool
    sender: dict[str, Any]
    text: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_markup: dict[str, Any] | None = None
    thread_id: int | None = None
    reply_to_message_id: int | None = None
    link_preview_options: dict[str, Any] | None = None
    disable_notification: bool = False
    kind: Literal["text", "sticker", "photo"] = "text"
    caption: str | None = None
    caption_entities: list[dict[str, Any]] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    """Extra Message fields for non-text kinds (``sticker``, ``photo``)."""
    edit_date: int | None = None
    deleted: bool = False
    history: list[MessageVersion] = field(default_factory=list)

    @property
    def visible_text(self) -> str:
        """What the user reads: the text, else the caption, else ''."""
        if self.text is not None:
            return self.text
        return self.caption or ""

    @property
    def edits(self) -> int:
        """How many successful edits the message has had."""
        return max(0, len(self.history) - 1)


@dataclass
class FakeDraft:
    """The current state of one ``sendMessageDraft`` stream (per chat and ``draft_id``)."""

    chat_id: int
    draft_id: int
    thread_id: int | None
    text: str
    entities: list[dict[str, Any]]
    can_stop: bool
    keep_on_stop: bool
    updated_at: float
    history: list[str] = field(default_factory=list)
    stopped: bool = False


@dataclass
class ChatInfo:
    """What the fake knows about a chat. Unregistered chats: id > 0 private, else supergroup."""

    id: int
    type: Literal["private", "group", "supergroup", "channel"]
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    is_forum: bool = False


class UpdateDict(dict[str, Any]):
    """An Update as Telegram would send it (a plain dict), with typed accessors for tests."""

    @property
    def update_id(self) -> int:
        return int(self["update_id"])

    @property
    def callback_query_id(self) -> str:
        """The id to expect in ``answerCallbackQuery`` (only for :meth:`FakeTelegram.callback`)."""
        return str(self["callback_query"]["id"])

    @property
    def message_id(self) -> int:
        """The user's message id (only for message updates)."""
        return int(self["message"]["message_id"])


def decode_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Turn Bot API arguments (strings on the wire) into Python values, as the server reads them.

    JSON-serialised fields (entities, reply_markup, ...) are parsed; a value that does not parse
    is kept as the raw string so the method can answer the way Telegram does. Integer ids and
    flags are converted; free text (``text``, ``data``...) is never touched, so ``text="123"``
    stays a str. Already-decoded values (a JSON request body) pass through.
    """
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str):
            if key in _JSON_FIELDS:
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            elif key in _INT_FIELDS:
                with contextlib.suppress(ValueError):
                    value = int(value)
            elif key in _BOOL_FIELDS:
                value = value.strip().lower() in ("true", "1")
        params[key] = value
    return params


async def feed(dp: Dispatcher, bot: Bot, update: Mapping[str, Any], **kwargs: Any) -> Any:
    """Feed one Update dict straight into a Dispatcher, as webhook mode would."""
    return await dp.feed_update(
        bot, Update.model_validate(dict(update), context={"bot": bot}), **kwargs
    )


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A Bot API error answer; carries the status code and description Telegram would send."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    @classmethod
    def bad(cls, tail: str) -> _ApiError:
        return cls(HTTPStatus.BAD_REQUEST, f"Bad Request: {tail}")

    @classmethod
    def flood(cls, retry_after: int) -> _ApiError:
        return cls(
            HTTPStatus.TOO_MANY_REQUESTS,
            f"Too Many Requests: retry after {retry_after}",
            retry_after=retry_after,
        )

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


@dataclass
class _Ok:
    """A successful result that also carries a description (setWebhook/deleteWebhook do)."""

    result: Any
    description: str | None = None


@dataclass
class _Fault:
    method: str
    status: int
    retry_after: int | None
    description: str
    remaining: int
    chat_id: int | None
    penalize: bool


@dataclass
class _Formatted:
    text: str
    entities: list[dict[str, Any]]


def _strip_none(value: Any) -> Any:
    """Drop ``None`` members recursively, as aiogram does before sending, for stable comparisons."""
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _to_plain(value: Any) -> Any:
    """Accept aiogram objects (BotCommandScope, ...) wherever a test passes a JSON-like value."""
    if isinstance(value, TelegramObject):
        return _strip_none(value.model_dump(mode="json", exclude_none=True))
    return _strip_none(value)


def _utf16_boundaries(text: str) -> tuple[dict[int, int], int]:
    """Map every code-point boundary (in UTF-16 units) to its UTF-8 byte offset; total length."""
    boundaries: dict[int, int] = {}
    u16 = 0
    b8 = 0
    for ch in text:
        boundaries[u16] = b8
        u16 += 2 if ord(ch) > 0xFFFF else 1
        b8 += len(ch.encode("utf-8"))
    boundaries[u16] = b8
    return boundaries, u16


def _json_int(obj: Mapping[str, Any], name: str, prefix: str) -> int:
    if name not in obj:
        raise _ApiError.bad(f'{prefix}Can\'t find field "{name}"')
    value = obj[name]
    if isinstance(value, bool):
        raise _ApiError.bad(f'{prefix}Field "{name}" must be a Number')
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise _ApiError.bad(f'{prefix}Field "{name}" must be a valid Number') from None
    raise _ApiError.bad(f'{prefix}Field "{name}" must be a Number')


def _json_str(obj: Mapping[str, Any], name: str, prefix: str, *, required: bool) -> str | None:
    if name not in obj:
        if required:
            raise _ApiError.bad(f'{prefix}Can\'t find field "{name}"')
        return None
    value = obj[name]
    if not isinstance(value, str):
        raise _ApiError.bad(f'{prefix}Field "{name}" must be of type String')
    return value


def _parse_entity(raw: object) -> dict[str, Any] | None:
    """One MessageEntity as the Bot API parses it; None for silently ignored (auto) types."""
    prefix = "can't parse MessageEntity: "
    if not isinstance(raw, dict):
        raise _ApiError.bad(prefix + "expected an Object")
    offset = _json_int(raw, "offset", prefix)
    length = _json_int(raw, "length", prefix)
    entity_type = _json_str(raw, "type", prefix, required=True)
    if not entity_type:
        raise _ApiError.bad(prefix + "Type is not specified")
    if entity_type in _AUTO_ENTITY_TYPES:
        return None
    if entity_type not in _USER_ENTITY_TYPES:
        raise _ApiError.bad(prefix + "Unsupported type specified")
    entity: dict[str, Any] = {"type": entity_type, "offset": offset, "length": length}
    if entity_type == "text_link":
        entity["url"] = _json_str(raw, "url", prefix, required=True)
    elif entity_type == "text_mention":
        user = raw.get("user")
        if not isinstance(user, dict):
            raise _ApiError.bad(prefix + 'Can\'t find field "user"')
        _json_int(user, "id", prefix)
        entity["user"] = _strip_none(user)
    elif entity_type == "custom_emoji":
        entity["custom_emoji_id"] = str(raw.get("custom_emoji_id") or "")
        if not entity["custom_emoji_id"]:
            raise _ApiError.bad(prefix + 'Can\'t find field "custom_emoji_id"')
    elif entity_type == "pre":
        language = _json_str(raw, "language", prefix, required=False)
        if language:
            entity["language"] = language
    elif entity_type == "date_time":
        entity["unix_time"] = _json_int(raw, "unix_time", prefix)
        date_time_format = _json_str(raw, "date_time_format", prefix, required=False)
        if date_time_format:
            entity["date_time_format"] = date_time_format
    return entity


def _bucket_retry(state: _BucketState, limit: Burst, now: float) -> int | None:
    """Like `_window_retry` for a token bucket; spends the token when the call fits."""
    state.tokens = min(limit.capacity, state.tokens + (now - state.updated) * limit.per_second)
    state.updated = now
    if state.tokens >= 1.0:
        state.tokens -= 1.0
        return None
    return max(1, math.ceil((1.0 - state.tokens) / limit.per_second - 1e-9))


def _window_retry(hits: deque[float], limit: RateLimit, now: float) -> int | None:
    """Seconds (ceil, >= 1) until one more call fits in the rolling window, or None if it fits."""
    while hits and hits[0] <= now - limit.window:
        hits.popleft()
    if len(hits) < limit.max_calls:
        return None
    frees_at = hits[len(hits) - limit.max_calls] + limit.window
    return max(1, math.ceil(frees_at - now - 1e-9))


# --------------------------------------------------------------------------------------------
# The state machine
# --------------------------------------------------------------------------------------------


class FakeTelegram:
    """The fake Bot API: chats, messages, drafts, commands, updates, flood control, recording.

    Everything is driven through :meth:`handle` (by the two front ends) and inspected through the
    recording helpers. It is single-event-loop, in-memory and deterministic given its ``clock``.
    """

    def __init__(
        self,
        *,
        bot_id: int = DEFAULT_BOT_ID,
        username: str = "relaygram_test_bot",
        first_name: str = "Relaygram Test",
        token: str = DEFAULT_TOKEN,
        clock: Callable[[], float] = time.monotonic,
        limits: FloodLimits | None = None,
        drafts_supported: bool = True,
        strict_entities: bool = True,
        poll_timeout_cap: float = 0.5,
    ) -> None:
        """
        :param token: the token the HTTP front end accepts (others get 401 "Unauthorized").
        :param clock: monotonic seconds; drives flood windows, draft expiry and request times.
        :param limits: flood control; ``None`` = off. Mutable later through ``self.limits``.
        :param drafts_supported: ``False`` makes sendMessageDraft answer 400 "method is not
            available", like a Bot API server that rejects drafts.
        :param strict_entities: reject entities that are zero-length or reach past the text
            ("can't parse entities: ..."). Telegram itself silently drops/clamps those; the fake
            is stricter by default because such entities are always a bug in relaygram.
        :param poll_timeout_cap: the longest a ``getUpdates`` long poll really waits (seconds),
            whatever ``timeout`` the bot asks for, so polling tests never hang.
        """
        self.bot_id = bot_id
        self.username = username
        self.first_name = first_name
        self.token = token
        self.clock = clock
        self.limits = limits or FloodLimits()
        self.drafts_supported = drafts_supported
        self.strict_entities = strict_entities
        self.poll_timeout_cap = poll_timeout_cap

        self.requests: list[RecordedRequest] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        self.dropped_updates: list[dict[str, Any]] = []
        """Updates pushed while their type was not in ``allowed_updates`` (Telegram drops them)."""
        self.entities_truncated = 0
        """How many times a text arrived with more than 100 entities (the rest were dropped)."""
        self.blocked_chats: set[int] = set()
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.allowed_updates: frozenset[str] = _DEFAULT_ALLOWED_UPDATES

        self._chats: dict[int, ChatInfo] = {}
        self._messages: dict[int, dict[int, FakeMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._drafts: dict[tuple[int, int], FakeDraft] = {}
        self._commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._pending_callbacks: dict[str, dict[str, Any]] = {}
        self._next_callback_id = 4_000_000_000_000_001
        self._updates: deque[dict[str, Any]] = deque()
        self._next_update_id = 1
        self._poll_waiter: asyncio.Future[bool] | None = None
        self._faults: list[_Fault] = []
        self._chat_hits: dict[int, deque[float]] = {}
        self._chat_buckets: dict[int, _BucketState] = {}
        self._admins: dict[int, set[int]] = {}
        self._bot_hits: deque[float] = deque()
        self._chat_penalty_until: dict[int, float] = {}
        self._bot_penalty_until = -math.inf

        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "sendchataction": self._send_chat_action,
            "sendmessagedraft": self._send_message_draft,
            "answercallbackquery": self._answer_callback_query,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getmycommands": self._get_my_commands,
            "getupdates": self._get_updates,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "close": self._close,
            "getchatmember": self._get_chat_member,
            "logout": self._log_out,
        }

    # ---------------------------------------------------------------- configuration (test side)

    def register_chat(
        self,
        chat_id: int,
        type: Literal["private", "group", "supergroup", "channel"],
        *,
        title: str | None = None,
        username: str | None = None,
        first_name: str | None = None,
        is_forum: bool = False,
    ) -> ChatInfo:
        """Declare a chat's type (and forum flag) instead of guessing it from the id's sign."""
        info = ChatInfo(chat_id, type, title, username, first_name, is_forum)
        self._chats[chat_id] = info
        return info

    def chat(self, chat_id: int) -> ChatInfo:
        """The chat's info, creating the default (private if id > 0, else supergroup)."""
        info = self._chats.get(chat_id)
        if info is None:
            info = ChatInfo(chat_id, "private" if chat_id > 0 else "supergroup")
            self._chats[chat_id] = info
        return info

    def set_admins(self, chat_id: int, user_ids: set[int]) -> None:
        """These users are administrators of the group (`getChatMember` says so)."""
        self._admins[chat_id] = set(user_ids)

    def block(self, chat_id: int) -> None:
        """The user blocked the bot: further calls to the chat get 403."""
        self.blocked_chats.add(chat_id)

    def fail_next(
        self,
        method: str,
        status: int = HTTPStatus.TOO_MANY_REQUESTS,
        retry_after: int = 3,
        description: str | None = None,
        times: int = 1,
        chat_id: int | None = None,
        *,
        penalize: bool = True,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (to ``chat_id``, if given) fail.

        429 answers carry ``parameters.retry_after`` and, with ``penalize``, open the chat's
        retry_after window exactly as a real flood answer does (calls inside it are recorded as
        ``during_penalty``). Other statuses get Telegram's usual description unless one is given.
        """
        if description is None:
            if status == HTTPStatus.TOO_MANY_REQUESTS:
                description = f"Too Many Requests: retry after {retry_after}"
            elif status == HTTPStatus.BAD_REQUEST:
                description = "Bad Request: injected by the test"
            elif status == HTTPStatus.FORBIDDEN:
                description = ERR_BLOCKED
            elif status == HTTPStatus.UNAUTHORIZED:
                description = ERR_UNAUTHORIZED
            else:
                description = HTTPStatus(status).phrase
        self._faults.append(
            _Fault(
                method=method.lower(),
                status=status,
                retry_after=retry_after if status == HTTPStatus.TOO_MANY_REQUESTS else None,
                description=description,
                remaining=times,
                chat_id=chat_id,
                penalize=penalize,
            )
        )

    # ---------------------------------------------------------------------- the API entry point

    async def handle(
        self, method: str, params: Mapping[str, Any], *, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Answer one Bot API call: ``(HTTP status, JSON body)`` exactly as Telegram would.

        ``token`` is checked when given (the HTTP front end passes it; the session does not).
        """
        decoded = decode_params(params)
        raw_chat = decoded.get("chat_id")
        chat_id = raw_chat if isinstance(raw_chat, int) and not isinstance(raw_chat, bool) else None
        record = RecordedRequest(method, decoded, chat_id, self.clock())
        self.requests.append(record)
        key = method.lower()
        try:
            if token is not None and token != self.token:
                raise _ApiError(
                    HTTPStatus.UNAUTHORIZED,
                    ERR_UNAUTHORIZED if _TOKEN_RE.match(token) else ERR_INVALID_TOKEN,
                )
            handler = self._handlers.get(key)
            if handler is None:
                raise _ApiError(HTTPStatus.NOT_FOUND, ERR_METHOD_NOT_FOUND)
            self._apply_faults(key, chat_id)
            if key not in _UNLIMITED_METHODS:
                self._check_penalty(key, chat_id, record)
                if key not in _CHAT_METHODS:
                    self._spend(None)
            result = await handler(decoded)
        except _ApiError as error:
            record.status = error.status
            record.description = error.description
            return error.status, error.body()
        record.status = HTTPStatus.OK
        body: dict[str, Any] = {"ok": True}
        if isinstance(result, _Ok):
            body["result"] = result.result
            if result.description:
                body["description"] = result.description
        else:
            body["result"] = result
        return HTTPStatus.OK, body

    # ------------------------------------------------------------------- flood control & faults

    def _apply_faults(self, key: str, chat_id: int | None) -> None:
        for fault in self._faults:
            if fault.method != key or fault.remaining <= 0:
                continue
            if fault.chat_id is not None and fault.chat_id != chat_id:
                continue
            fault.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining > 0]
            if fault.retry_after is not None and fault.penalize and chat_id is not None:
                until = self.clock() + fault.retry_after
                self._chat_penalty_until[chat_id] = max(
                    self._chat_penalty_until.get(chat_id, -math.inf), until
                )
            raise _ApiError(fault.status, fault.description, fault.retry_after)

    def _check_penalty(self, key: str, chat_id: int | None, record: RecordedRequest) -> None:
        """Inside an open 429 window every call fails again, and is recorded as a violation."""
        now = self.clock()
        until = self._bot_penalty_until
        chat_until = -math.inf
        if key in _CHAT_METHODS and chat_id is not None:
            chat_until = self._chat_penalty_until.get(chat_id, -math.inf)
            until = max(until, chat_until)
        if until <= now:
            return
        record.during_penalty = True
        extension = self.limits.penalty_extension
        if extension > 0:
            if chat_until > now and chat_id is not None:
                self._chat_penalty_until[chat_id] = chat_until + extension
            if self._bot_penalty_until > now:
                self._bot_penalty_until += extension
            until += extension
        raise _ApiError.flood(max(1, math.ceil(until - now - 1e-9)))

    def _chat_limit(self, chat_id: int) -> RateLimit | Burst | None:
        if self.chat(chat_id).type == "private":
            return self.limits.private_chat
        return self.limits.group_chat

    def _spend(self, chat_id: int | None) -> None:
        """Charge one call to the chat's and the bot's budgets, or answer 429 and open a window."""
        now = self.clock()
        chat_limit = self._chat_limit(chat_id) if chat_id is not None else None
        if chat_id is not None and isinstance(chat_limit, Burst):
            state = self._chat_buckets.setdefault(chat_id, _BucketState(chat_limit.capacity, now))
            retry = _bucket_retry(state, chat_limit, now)
            if retry is not None:
                self._chat_penalty_until[chat_id] = now + retry
                raise _ApiError.flood(retry)
        elif chat_id is not None and isinstance(chat_limit, RateLimit):
            hits = self._chat_hits.setdefault(chat_id, deque())
            retry = _window_retry(hits, chat_limit, now)
            if retry is not None:
                self._chat_penalty_until[chat_id] = now + retry
                raise _ApiError.flood(retry)
        bot_limit = self.limits.bot_wide
        if bot_limit is not None:
            retry = _window_retry(self._bot_hits, bot_limit, now)
            if retry is not None:
                self._bot_penalty_until = now + retry
                raise _ApiError.flood(retry)
            self._bot_hits.append(now)
        if chat_id is not None and isinstance(chat_limit, RateLimit):
            self._chat_hits[chat_id].append(now)

    # ------------------------------------------------------------------------- argument helpers

    def _chat_id(self, params: Mapping[str, Any]) -> int:
        value = params.get("chat_id")
        if value is None or value == "":
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_CHAT_ID_EMPTY)
        if isinstance(value, int) and not isinstance(value, bool) and value != 0:
            return value
        raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_CHAT_NOT_FOUND)

    def _check_writable(self, chat_id: int) -> None:
        if chat_id in self.blocked_chats:
            raise _ApiError(HTTPStatus.FORBIDDEN, ERR_BLOCKED)

    @staticmethod
    def _int(params: Mapping[str, Any], name: str) -> int | None:
        """An optional integer argument; the Bot API reads garbage as 0 (= absent)."""
        value = params.get(name)
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            return value or None
        return None

    @staticmethod
    def _text(params: Mapping[str, Any], name: str = "text") -> str:
        value = params.get(name)
        if value is None:
            return ""
        return value if isinstance(value, str) else str(value)

    def _reply_markup(
        self, params: Mapping[str, Any], *, inline_only: bool
    ) -> dict[str, Any] | None:
        if "reply_markup" not in params:
            return None
        markup = params["reply_markup"]
        if not isinstance(markup, dict):
            raise _ApiError.bad("can't parse reply keyboard markup JSON object")
        markup = _strip_none(markup)
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            if inline_only:
                return None
            return cast(dict[str, Any], markup)
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise _ApiError.bad("can't parse reply keyboard markup JSON object")
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise _ApiError.bad(
                        "can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard"
                    )
                if not _INLINE_BUTTON_ACTIONS.intersection(button):
                    raise _ApiError.bad(
                        "can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and not (1 <= len(str(data).encode("utf-8")) <= 64):
                    raise _ApiError.bad("BUTTON_DATA_INVALID")
        return cast(dict[str, Any], markup)

    @staticmethod
    def _json_object(params: Mapping[str, Any], name: str, what: str) -> dict[str, Any] | None:
        if name not in params:
            return None
        value = params[name]
        if not isinstance(value, dict):
            raise _ApiError.bad(f"can't parse {what} JSON object")
        return cast(dict[str, Any], _strip_none(value))

    # ------------------------------------------------------------------------ text & entities

    def _format(
        self,
        text: str,
        params: Mapping[str, Any],
        *,
        allow_empty: bool,
        entities_field: str = "entities",
    ) -> _Formatted:
        """Parse ``text`` + entities/parse_mode and normalise them the way TDLib does.

        Steps (each with Telegram's wording): parse entities, reject bad offsets, clean control
        characters (``\\r`` removed, others become spaces), trim leading/trailing spaces and
        newlines (so "Hi " edited to "Hi" is *not modified*), keep the first 100 entities, and
        enforce the 4096 UTF-16 code unit limit.
        """
        parse_mode = params.get("parse_mode")
        raw_entities: list[dict[str, Any]] = []
        if isinstance(parse_mode, str) and parse_mode.strip().lower() not in ("", "none"):
            text = self._parse_markup(text, parse_mode.strip().lower())
        else:
            value = params.get(entities_field)
            if isinstance(value, list):  # unparsable JSON is silently ignored by the Bot API
                for item in value:
                    entity = _parse_entity(item)
                    if entity is not None:
                        raw_entities.append(entity)
        formatted = self._normalize(text, raw_entities, allow_empty=allow_empty)
        if utf16_len(formatted.text) > TEXT_LIMIT:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_TOO_LONG)
        return formatted

    @staticmethod
    def _parse_markup(text: str, mode: str) -> str:
        """Plain text passes; real markup is refused (relaygram sends entities, not parse modes)."""
        if mode == "markdownv2":
            out: list[str] = []
            escaped = False
            for ch in text:
                if escaped:
                    out.append(ch)
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch in _MDV2_FORMATTING:
                    raise _ApiError.bad(
                        "can't parse entities: the fake Bot API does not parse MarkdownV2 "
                        "formatting; send entities instead"
                    )
                elif ch in _MDV2_RESERVED:
                    raise _ApiError.bad(
                        f"can't parse entities: Character '{ch}' is reserved and must be escaped "
                        "with the preceding '\\'"
                    )
                else:
                    out.append(ch)
            return "".join(out)
        if mode == "markdown":
            if any(ch in "_*`[" for ch in text):
                raise _ApiError.bad(
                    "can't parse entities: the fake Bot API does not parse Markdown formatting; "
                    "send entities instead"
                )
            return text
        if mode == "html":
            if "<" in text:
                raise _ApiError.bad(
                    "can't parse entities: the fake Bot API does not parse HTML tags; send "
                    "entities instead"
                )
            return html.unescape(text)
        raise _ApiError.bad("unsupported parse_mode")

    def _normalize(
        self, text: str, entities: list[dict[str, Any]], *, allow_empty: bool
    ) -> _Formatted:
        for entity in entities:
            if not 0 <= entity["offset"] <= 1_000_000:
                raise _ApiError.bad(f"receive an entity with incorrect offset {entity['offset']}")
            if not 0 <= entity["length"] <= 1_000_000:
                raise _ApiError.bad(f"receive an entity with incorrect length {entity['length']}")
        boundaries, raw_len = _utf16_boundaries(text)
        if self.strict_entities:
            for entity in entities:
                start, length = entity["offset"], entity["length"]
                if length == 0:
                    raise _ApiError.bad(
                        f"can't parse entities: entity of type {entity['type']} at UTF-16 offset "
                        f"{start} has zero length (fake Bot API strict_entities; Telegram would "
                        "drop it silently)"
                    )
                if start + length > raw_len:
                    raise _ApiError.bad(
                        f"can't parse entities: entity of type {entity['type']} at UTF-16 offset "
                        f"{start} with length {length} ends after the end of the text "
                        f"({raw_len} UTF-16 code units) (fake Bot API strict_entities; Telegram "
                        "would clamp it silently)"
                    )
        entities = [e for e in entities if e["length"] > 0]
        entities.sort(key=lambda e: (e["offset"], -e["length"]))
        for entity in entities:
            start, end = entity["offset"], entity["offset"] + entity["length"]
            if start < raw_len and start not in boundaries:
                raise _ApiError.bad(
                    "entity begins in a middle of a UTF-16 symbol at byte offset "
                    f"{boundaries[start + 1]}"
                )
            if end < raw_len and end not in boundaries:
                raise _ApiError.bad(
                    f"entity beginning at UTF-16 offset {start} ends in a middle of a UTF-16 "
                    f"symbol at byte offset {boundaries[end + 1]}"
                )

        # Clean: '\r' is removed, other control characters become spaces.
        new_at = [0] * (raw_len + 1)
        out: list[str] = []
        u16 = 0
        cur = 0
        for ch in text:
            width = 2 if ord(ch) > 0xFFFF else 1
            for k in range(width):
                new_at[u16 + k] = cur
            u16 += width
            if ch == "\r":
                continue
            if ord(ch) < 32 and ch != "\n":
                ch = " "
            out.append(ch)
            cur += width
        new_at[raw_len] = cur
        cleaned = "".join(out)
        remapped: list[dict[str, Any]] = []
        for entity in entities:
            start = new_at[min(entity["offset"], raw_len)]
            end = new_at[min(entity["offset"] + entity["length"], raw_len)]
            if end > start:
                remapped.append({**entity, "offset": start, "length": end - start})

        # Trim trailing, then leading (not past the first entity) spaces and newlines.
        trimmed = cleaned.rstrip(" \n")
        length = utf16_len(trimmed)
        kept: list[dict[str, Any]] = []
        for entity in remapped:
            if entity["offset"] >= length:
                continue
            end = min(entity["offset"] + entity["length"], length)
            kept.append({**entity, "length": end - entity["offset"]})
        kept.sort(key=lambda e: (e["offset"], -e["length"]))
        first_entity = kept[0]["offset"] if kept else len(trimmed)
        lead = len(trimmed) - len(trimmed.lstrip(" \n"))
        lead = min(lead, first_entity)
        if lead:
            trimmed = trimmed[lead:]
            kept = [{**e, "offset": e["offset"] - lead} for e in kept]
        if not trimmed and not allow_empty:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_TEXT_MUST_BE_NON_EMPTY)
        if not trimmed:
            kept = []

        counted = [e for e in kept if e["type"] != "custom_emoji"]
        if len(counted) > MAX_ENTITIES:
            self.entities_truncated += 1
            dropped = {id(e) for e in counted[MAX_ENTITIES:]}
            kept = [e for e in kept if id(e) not in dropped]
        return _Formatted(trimmed, kept)

    # ----------------------------------------------------------------------------- JSON views

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def _chat_json(self, chat_id: int) -> dict[str, Any]:
        info = self.chat(chat_id)
        chat: dict[str, Any] = {"id": chat_id, "type": info.type}
        if info.type == "private":
            chat["first_name"] = info.first_name or "Test"
            if info.username:
                chat["username"] = info.username
        else:
            chat["title"] = info.title or f"Test {info.type} {abs(chat_id)}"
            if info.username:
                chat["username"] = info.username
            if info.is_forum:
                chat["is_forum"] = True
        return chat

    def _message_json(self, message: FakeMessage, *, with_reply: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": self._chat_json(message.chat_id),
            "from": self._bot_user() if message.from_bot else dict(message.sender),
        }
        if message.thread_id is not None:
            data["message_thread_id"] = message.thread_id
            if self.chat(message.chat_id).is_forum:
                data["is_topic_message"] = True
        if message.text is not None:
            data["text"] = message.text
            if message.entities:
                data["entities"] = [dict(e) for e in message.entities]
        if message.caption is not None:
            data["caption"] = message.caption
            if message.caption_entities:
                data["caption_entities"] = [dict(e) for e in message.caption_entities]
        data.update(message.payload)
        if message.reply_markup is not None and "inline_keyboard" in message.reply_markup:
            data["reply_markup"] = message.reply_markup
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if with_reply and message.reply_to_message_id is not None:
            replied = self._find(message.chat_id, message.reply_to_message_id)
            if replied is not None:
                data["reply_to_message"] = self._message_json(replied, with_reply=False)
        return data

    # -------------------------------------------------------------------------- chat contents

    def _find(self, chat_id: int, message_id: int | None) -> FakeMessage | None:
        if message_id is None:
            return None
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None or message.deleted:
            return None
        return message

    def _add_message(self, message: FakeMessage) -> FakeMessage:
        self._messages.setdefault(message.chat_id, {})[message.message_id] = message
        message.history.append(
            MessageVersion(
                message.text, tuple(message.entities), message.reply_markup, self.clock()
            )
        )
        return message

    def _allocate_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    # ------------------------------------------------------------------------------- methods

    async def _get_me(self, params: dict[str, Any]) -> Any:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _reply_target(self, chat_id: int, params: Mapping[str, Any]) -> int | None:
        reply = self._json_object(params, "reply_parameters", "reply parameters")
        allow_missing = bool(params.get("allow_sending_without_reply"))
        target: int | None = self._int(params, "reply_to_message_id")
        if reply is not None:
            target = _json_int(reply, "message_id", "can't parse reply parameters: ")
            allow_missing = bool(reply.get("allow_sending_without_reply", allow_missing))
            other_chat = reply.get("chat_id")
            if other_chat is not None and other_chat != chat_id:
                raise _ApiError.bad("replies to other chats are not supported by the fake")
        if target is None:
            return None
        if self._find(chat_id, target) is None:
            if allow_missing:
                return None
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_REPLY_NOT_FOUND)
        return target

    async def _send_message(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        text = self._text(params)
        if len(text.encode("utf-8")) > MAX_RAW_TEXT_BYTES:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_RAW_TEXT_TOO_LONG)
        if not text:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_TEXT_EMPTY)
        preview = self._json_object(params, "link_preview_options", "link preview options")
        formatted = self._format(text, params, allow_empty=False)
        markup = self._reply_markup(params, inline_only=False)
        self._check_writable(chat_id)
        reply_to = self._reply_target(chat_id, params)
        self._spend(chat_id)
        message = self._add_message(
            FakeMessage(
                chat_id=chat_id,
                message_id=self._allocate_message_id(chat_id),
                date=int(time.time()),
                from_bot=True,
                sender=self._bot_user(),
                text=formatted.text,
                entities=formatted.entities,
                reply_markup=markup,
                thread_id=self._int(params, "message_thread_id"),
                reply_to_message_id=reply_to,
                link_preview_options=preview,
                disable_notification=bool(params.get("disable_notification")),
            )
        )
        # "The draft will disappear ... if the bot sends a message."
        for key in [k for k in self._drafts if k[0] == chat_id]:
            del self._drafts[key]
        return self._message_json(message)

    def _editable(self, params: Mapping[str, Any]) -> tuple[int, FakeMessage]:
        if params.get("inline_message_id"):
            raise _ApiError.bad("inline messages are not supported by the fake Bot API")
        chat_id = self._chat_id(params)
        message = self._find(chat_id, self._int(params, "message_id"))
        if message is None:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_EDIT_NOT_FOUND)
        if not message.from_bot:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_CANT_EDIT)
        return chat_id, message

    def _apply_edit(
        self,
        message: FakeMessage,
        text: str | None,
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        current = (message.text, message.entities, message.reply_markup)
        if current == (text, entities, markup):
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_NOT_MODIFIED)
        message.text, message.entities, message.reply_markup = text, entities, markup
        message.edit_date = int(time.time())
        message.history.append(MessageVersion(text, tuple(entities), markup, self.clock()))
        return self._message_json(message)

    async def _edit_message_text(self, params: dict[str, Any]) -> Any:
        text = self._text(params)
        if len(text.encode("utf-8")) > MAX_RAW_TEXT_BYTES:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_RAW_TEXT_TOO_LONG)
        if not text:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_TEXT_EMPTY)
        self._json_object(params, "link_preview_options", "link preview options")
        formatted = self._format(text, params, allow_empty=False)
        # Editing the text without reply_markup removes the inline keyboard, as in Telegram.
        markup = self._reply_markup(params, inline_only=True)
        chat_id, message = self._editable(params)
        if message.text is None:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_NO_TEXT_TO_EDIT)
        self._check_writable(chat_id)
        self._spend(chat_id)
        return self._apply_edit(message, formatted.text, formatted.entities, markup)

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> Any:
        markup = self._reply_markup(params, inline_only=True)
        chat_id, message = self._editable(params)
        self._check_writable(chat_id)
        self._spend(chat_id)
        return self._apply_edit(message, message.text, message.entities, markup)

    async def _delete_message(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        message = self._find(chat_id, self._int(params, "message_id"))
        if message is None:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_DELETE_NOT_FOUND)
        self._check_writable(chat_id)
        self._spend(chat_id)
        message.deleted = True
        return True

    async def _send_chat_action(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _ApiError.bad("wrong parameter action in request")
        self._check_writable(chat_id)
        self._spend(chat_id)
        return True

    async def _send_message_draft(self, params: dict[str, Any]) -> Any:
        if not self.drafts_supported:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_DRAFTS_UNAVAILABLE)
        chat_id = self._chat_id(params)
        draft_id = self._int(params, "draft_id")
        if draft_id is None:
            raise _ApiError.bad("draft_id must be non-zero")
        text = self._text(params)
        if len(text.encode("utf-8")) > MAX_RAW_TEXT_BYTES:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_RAW_TEXT_TOO_LONG)
        formatted = self._format(text, params, allow_empty=True)
        if self.chat(chat_id).type != "private":
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_DRAFT_PEER_INVALID)
        self._check_writable(chat_id)
        self._spend(chat_id)
        now = self.clock()
        draft = self._drafts.get((chat_id, draft_id))
        if draft is None or draft.updated_at + DRAFT_TTL < now:
            draft = FakeDraft(
                chat_id=chat_id,
                draft_id=draft_id,
                thread_id=self._int(params, "message_thread_id"),
                text="",
                entities=[],
                can_stop=False,
                keep_on_stop=False,
                updated_at=now,
            )
            self._drafts[(chat_id, draft_id)] = draft
        draft.text = formatted.text
        draft.entities = formatted.entities
        draft.can_stop = bool(params.get("can_stop"))
        draft.keep_on_stop = bool(params.get("keep_on_stop"))
        draft.thread_id = self._int(params, "message_thread_id")
        draft.updated_at = now
        draft.history.append(formatted.text)
        return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> Any:
        query_id = str(params.get("callback_query_id") or "")
        if self._pending_callbacks.pop(query_id, None) is None:
            raise _ApiError(HTTPStatus.BAD_REQUEST, ERR_QUERY_INVALID)
        self.answered_callbacks.append(
            {
                "id": query_id,
                "text": params.get("text"),
                "show_alert": bool(params.get("show_alert")),
                "url": params.get("url"),
                "cache_time": params.get("cache_time"),
            }
        )
        return True

    @staticmethod
    def _scope_key(scope: Any, language_code: Any) -> tuple[str, str]:
        plain = _to_plain(scope) if scope is not None else {"type": "default"}
        if isinstance(plain, str):
            try:
                plain = json.loads(plain)
            except ValueError:
                raise _ApiError.bad("can't parse BotCommandScope JSON object") from None
        if not isinstance(plain, dict) or not isinstance(plain.get("type"), str):
            raise _ApiError.bad("can't parse BotCommandScope JSON object")
        return json.dumps(plain, sort_keys=True), str(language_code or "")

    async def _set_my_commands(self, params: dict[str, Any]) -> Any:
        raw = params.get("commands", [])
        if isinstance(raw, str):
            raise _ApiError.bad("can't parse commands JSON object")
        if not isinstance(raw, list):
            raise _ApiError.bad("expected an Array of BotCommand")
        commands: list[dict[str, str]] = []
        for item in raw:
            prefix = "can't parse BotCommand: "
            if not isinstance(item, dict):
                raise _ApiError.bad(prefix + "expected an Object")
            command = (_json_str(item, "command", prefix, required=True) or "").strip()
            description = (_json_str(item, "description", prefix, required=True) or "").strip()
            command = command.removeprefix("/")
            if not command:
                raise _ApiError.bad("command must be non-empty")
            if len(command) > 32:
                raise _ApiError.bad("command length must not exceed 32")
            if not description:
                raise _ApiError.bad("command description must be non-empty")
            if len(description) > 256:
                raise _ApiError.bad("command description length must not exceed 256")
            if not _COMMAND_RE.match(command):
                raise _ApiError.bad("BOT_COMMAND_INVALID")
            commands.append({"command": command, "description": description})
        if len(commands) > 100:
            raise _ApiError.bad("BOT_COMMANDS_TOO_MUCH")
        key = self._scope_key(params.get("scope"), params.get("language_code"))
        if commands:
            self._commands[key] = commands
        else:
            self._commands.pop(key, None)
        return True

    async def _delete_my_commands(self, params: dict[str, Any]) -> Any:
        self._commands.pop(self._scope_key(params.get("scope"), params.get("language_code")), None)
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> Any:
        key = self._scope_key(params.get("scope"), params.get("language_code"))
        return [dict(c) for c in self._commands.get(key, [])]

    def _set_allowed_updates(self, value: Any) -> None:
        if not isinstance(value, list):
            return
        chosen = frozenset(v.lower() for v in value if isinstance(v, str)) & set(_ALL_UPDATE_TYPES)
        self.allowed_updates = chosen or _DEFAULT_ALLOWED_UPDATES

    async def _get_updates(self, params: dict[str, Any]) -> Any:
        if self.webhook_url:
            raise _ApiError(HTTPStatus.CONFLICT, ERR_WEBHOOK_ACTIVE)
        offset = self._int(params, "offset") or 0
        limit = min(max(self._int(params, "limit") or 100, 1), 100)
        timeout = max(self._int(params, "timeout") or 0, 0)
        if "allowed_updates" in params:
            self._set_allowed_updates(params["allowed_updates"])
        self._confirm(offset)
        if self._poll_waiter is not None and not self._poll_waiter.done():
            self._poll_waiter.set_result(False)  # the older long poll loses: 409 Conflict
        if self._updates or timeout <= 0:
            return [dict(u) for u in list(self._updates)[:limit]]
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._poll_waiter = waiter
        try:
            await asyncio.wait({waiter}, timeout=min(float(timeout), self.poll_timeout_cap))
        finally:
            if self._poll_waiter is waiter:
                self._poll_waiter = None
        if waiter.done() and waiter.result() is False:
            raise _ApiError(HTTPStatus.CONFLICT, ERR_GET_UPDATES_CONFLICT)
        return [dict(u) for u in list(self._updates)[:limit]]

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
        elif offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()

    async def _set_webhook(self, params: dict[str, Any]) -> Any:
        url = self._text(params, "url")
        if not url:
            return await self._delete_webhook(params)
        if not url.startswith("https://"):
            raise _ApiError.bad("bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook_url = url
        self.webhook_secret = params.get("secret_token") or None
        if "allowed_updates" in params:
            self._set_allowed_updates(params["allowed_updates"])
        if self._poll_waiter is not None and not self._poll_waiter.done():
            self._poll_waiter.set_result(False)
        return _Ok(True, "Webhook was set")

    async def _delete_webhook(self, params: dict[str, Any]) -> Any:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        was_set = bool(self.webhook_url)
        self.webhook_url = ""
        self.webhook_secret = None
        return _Ok(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, params: dict[str, Any]) -> Any:
        info: dict[str, Any] = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.allowed_updates != _DEFAULT_ALLOWED_UPDATES:
            info["allowed_updates"] = sorted(self.allowed_updates)
        return info

    async def _close(self, params: dict[str, Any]) -> Any:
        return True

    async def _get_chat_member(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        user_id = self._int(params, "user_id")
        if user_id is None:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "Bad Request: user_id is empty")
        status = "administrator" if user_id in self._admins.get(chat_id, set()) else "member"
        member: dict[str, Any] = {
            "status": status,
            "user": {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"},
        }
        if status == "administrator":
            member.update(
                can_be_edited=False,
                is_anonymous=False,
                can_manage_chat=True,
                can_delete_messages=True,
                can_manage_video_chats=True,
                can_restrict_members=True,
                can_promote_members=False,
                can_change_info=True,
                can_invite_users=True,
                can_post_stories=False,
                can_edit_stories=False,
                can_delete_stories=False,
                can_send_welcome_messages=False,
            )
        return member

    async def _log_out(self, params: dict[str, Any]) -> Any:
        return True

    # ------------------------------------------------------------------ the user (test side)

    def push_update(self, update: Mapping[str, Any]) -> UpdateDict:
        """Queue an Update for ``getUpdates`` (allocating ``update_id`` if missing).

        Like Telegram, an update whose type is not in the bot's ``allowed_updates`` is dropped
        (kept in ``dropped_updates`` so a confused test can see why nothing arrived).
        """
        built = UpdateDict(update)
        if "update_id" not in built:
            built["update_id"] = self._allocate_update_id()
        else:
            self._next_update_id = max(self._next_update_id, int(built["update_id"]) + 1)
        kinds = [k for k in built if k != "update_id"]
        if kinds and not any(k in self.allowed_updates for k in kinds):
            self.dropped_updates.append(dict(built))
            return built
        self._updates.append(dict(built))
        if self._poll_waiter is not None and not self._poll_waiter.done():
            self._poll_waiter.set_result(True)
        return built

    def _allocate_update_id(self) -> int:
        update_id = self._next_update_id
        self._next_update_id += 1
        return update_id

    def _user_json(
        self, user_id: int, username: str | None, language_code: str | None, first_name: str
    ) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        return user

    def _user_message(
        self,
        chat_id: int,
        *,
        user_id: int | None,
        chat_type: Literal["private", "group", "supergroup", "channel"] | None,
        thread_id: int | None,
        reply_to_message_id: int | None,
        username: str | None,
        language_code: str | None,
        first_name: str,
        **content: Any,
    ) -> UpdateDict:
        if chat_type is not None and (
            chat_id not in self._chats or self._chats[chat_id].type != chat_type
        ):
            self.register_chat(chat_id, chat_type)
        info = self.chat(chat_id)
        if user_id is None:
            user_id = chat_id if info.type == "private" else DEFAULT_USER_ID
        if reply_to_message_id is not None and self._find(chat_id, reply_to_message_id) is None:
            raise ValueError(f"no live message {reply_to_message_id} in chat {chat_id} to reply to")
        message = self._add_message(
            FakeMessage(
                chat_id=chat_id,
                message_id=self._allocate_message_id(chat_id),
                date=int(time.time()),
                from_bot=False,
                sender=self._user_json(user_id, username, language_code, first_name),
                thread_id=thread_id,
                reply_to_message_id=reply_to_message_id,
                **content,
            )
        )
        return UpdateDict(update_id=self._allocate_update_id(), message=self._message_json(message))

    def user_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        chat_type: Literal["private", "group", "supergroup", "channel"] | None = None,
        thread_id: int | None = None,
        reply_to_message_id: int | None = None,
        username: str | None = "test_user",
        language_code: str | None = "en",
        first_name: str = "Test",
        entities: list[dict[str, Any]] | None = None,
    ) -> UpdateDict:
        """An Update with the user's text message; the message is stored in the chat too.

        ``chat_type`` registers the chat (default: private for ids > 0, else supergroup);
        ``user_id`` defaults to the chat id in private chats and :data:`DEFAULT_USER_ID`
        elsewhere. A leading ``/command`` gets its ``bot_command`` entity, as Telegram adds it.
        """
        if entities is None:
            entities = []
            command = re.match(r"^/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
            if command:
                entities.append({"type": "bot_command", "offset": 0, "length": command.end()})
            # Telegram marks @username mentions itself (offsets in UTF-16 code units).
            for mention in re.finditer(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{4,31}", text):
                if command and mention.start() < command.end():
                    continue
                entities.append(
                    {
                        "type": "mention",
                        "offset": utf16_len(text[: mention.start()]),
                        "length": utf16_len(mention.group()),
                    }
                )
        return self._user_message(
            chat_id,
            user_id=user_id,
            chat_type=chat_type,
            thread_id=thread_id,
            reply_to_message_id=reply_to_message_id,
            username=username,
            language_code=language_code,
            first_name=first_name,
            kind="text",
            text=text,
            entities=list(entities),
        )

    def user_sticker(
        self,
        chat_id: int,
        *,
        emoji: str = "👍",
        user_id: int | None = None,
        chat_type: Literal["private", "group", "supergroup", "channel"] | None = None,
        thread_id: int | None = None,
        reply_to_message_id: int | None = None,
        username: str | None = "test_user",
        language_code: str | None = "en",
        first_name: str = "Test",
    ) -> UpdateDict:
        """An Update with a sticker from the user (a message without text)."""
        sticker = {
            "file_id": "CAACAgIAAxkBAAEfakeSticker",
            "file_unique_id": "AgADfakeSticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return self._user_message(
            chat_id,
            user_id=user_id,
            chat_type=chat_type,
            thread_id=thread_id,
            reply_to_message_id=reply_to_message_id,
            username=username,
            language_code=language_code,
            first_name=first_name,
            kind="sticker",
            payload={"sticker": sticker},
        )

    def user_photo(
        self,
        chat_id: int,
        *,
        caption: str | None = None,
        caption_entities: list[dict[str, Any]] | None = None,
        user_id: int | None = None,
        chat_type: Literal["private", "group", "supergroup", "channel"] | None = None,
        thread_id: int | None = None,
        reply_to_message_id: int | None = None,
        username: str | None = "test_user",
        language_code: str | None = "en",
        first_name: str = "Test",
    ) -> UpdateDict:
        """An Update with a photo (two sizes, as Telegram sends) and an optional caption."""
        photo = [
            {
                "file_id": "AgACAgIAAxkBAAEfakePhotoS",
                "file_unique_id": "AQADfakeS",
                "width": 90,
                "height": 90,
                "file_size": 1_200,
            },
            {
                "file_id": "AgACAgIAAxkBAAEfakePhotoM",
                "file_unique_id": "AQADfakeM",
                "width": 800,
                "height": 800,
                "file_size": 64_000,
            },
        ]
        return self._user_message(
            chat_id,
            user_id=user_id,
            chat_type=chat_type,
            thread_id=thread_id,
            reply_to_message_id=reply_to_message_id,
            username=username,
            language_code=language_code,
            first_name=first_name,
            kind="photo",
            caption=caption,
            caption_entities=list(caption_entities or []),
            payload={"photo": photo},
        )

    def callback(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        username: str | None = "test_user",
        language_code: str | None = "en",
        first_name: str = "Test",
    ) -> UpdateDict:
        """An Update with the user pressing an inline button under ``message_id``.

        The query id (``.callback_query_id``) becomes answerable exactly once; a message that
        does not exist (any more) is sent as an InaccessibleMessage (``date`` 0), as Telegram does.
        """
        info = self.chat(chat_id)
        if user_id is None:
            user_id = chat_id if info.type == "private" else DEFAULT_USER_ID
        query_id = str(self._next_callback_id)
        self._next_callback_id += 1
        message = self._find(chat_id, message_id)
        message_json = (
            self._message_json(message)
            if message is not None
            else {"chat": self._chat_json(chat_id), "message_id": message_id, "date": 0}
        )
        query = {
            "id": query_id,
            "from": self._user_json(user_id, username, language_code, first_name),
            "message": message_json,
            "chat_instance": str(-abs(chat_id) * 7919 % 10**18),
            "data": data,
        }
        self._pending_callbacks[query_id] = query
        return UpdateDict(update_id=self._allocate_update_id(), callback_query=query)

    def stopped_generation(
        self, chat_id: int, draft_id: int, thread_id: int | None = None
    ) -> UpdateDict:
        """An Update for the user pressing "stop" under a draft (``stopped_message_generation``).

        The draft disappears unless it was sent with ``keep_on_stop``; either way it is marked
        ``stopped``.
        """
        draft = self._drafts.get((chat_id, draft_id))
        if draft is not None:
            draft.stopped = True
            if not draft.keep_on_stop:
                del self._drafts[(chat_id, draft_id)]
        event: dict[str, Any] = {"chat": self._chat_json(chat_id), "draft_id": draft_id}
        if thread_id is not None:
            event["message_thread_id"] = thread_id
        return UpdateDict(update_id=self._allocate_update_id(), stopped_message_generation=event)

    async def feed(self, dp: Dispatcher, bot: Bot, update: Mapping[str, Any], **kwargs: Any) -> Any:
        """Same as the module-level :func:`feed`."""
        return await feed(dp, bot, update, **kwargs)

    # --------------------------------------------------------------------- recording helpers

    @property
    def violations_during_penalty(self) -> int:
        """Calls made to a chat (or the bot) while its 429 retry_after window was still open.

        Telegram lengthens the penalty of bots that do this; relaygram's tests assert it stays 0.
        """
        return sum(1 for r in self.requests if r.during_penalty)

    def calls(self, method: str, chat_id: int | None = None) -> list[RecordedRequest]:
        """Recorded calls of ``method`` (case-insensitive), optionally to one chat, in order."""
        key = method.lower()
        return [
            r
            for r in self.requests
            if r.method.lower() == key and (chat_id is None or r.chat_id == chat_id)
        ]

    def messages(
        self,
        chat_id: int,
        thread_id: int | None = None,
        *,
        include_user: bool = False,
        include_deleted: bool = False,
    ) -> list[FakeMessage]:
        """The chat's messages in order: by default the bot's live (not deleted) ones.

        ``thread_id`` narrows to one forum topic / thread (None = all).
        """
        found = sorted(self._messages.get(chat_id, {}).values(), key=lambda m: m.message_id)
        return [
            m
            for m in found
            if (include_user or m.from_bot)
            and (include_deleted or not m.deleted)
            and (thread_id is None or m.thread_id == thread_id)
        ]

    def visible_texts(
        self, chat_id: int, thread_id: int | None = None, *, include_user: bool = False
    ) -> list[str]:
        """What the user sees from the bot right now, one string per live message."""
        return [
            m.visible_text for m in self.messages(chat_id, thread_id, include_user=include_user)
        ]

    def last_message(self, chat_id: int, *, include_user: bool = False) -> FakeMessage | None:
        """The newest live bot message in the chat (or any sender's with ``include_user``)."""
        found = self.messages(chat_id, include_user=include_user)
        return found[-1] if found else None

    def message(self, chat_id: int, message_id: int) -> FakeMessage | None:
        """One message by id, deleted or not (``.deleted`` tells)."""
        return self._messages.get(chat_id, {}).get(message_id)

    def draft(self, chat_id: int, draft_id: int | None = None) -> FakeDraft | None:
        """The draft the user currently sees in the chat (newest, not expired), if any."""
        now = self.clock()
        live = [
            d
            for (chat, did), d in self._drafts.items()
            if chat == chat_id
            and (draft_id is None or did == draft_id)
            and d.updated_at + DRAFT_TTL >= now
        ]
        return max(live, key=lambda d: d.updated_at) if live else None

    def commands(self, scope: Any = None, language_code: str | None = None) -> list[dict[str, str]]:
        """The commands set for ``scope`` (dict or aiogram BotCommandScope; None = default)."""
        return [dict(c) for c in self._commands.get(self._scope_key(scope, language_code), [])]

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued but not yet confirmed by a later ``getUpdates`` offset."""
        return [dict(u) for u in self._updates]

    def dump(self, last: int = 20) -> str:
        """The last requests, one per line, for assertion messages."""
        lines = [r.summary() for r in self.requests[-last:]]
        if self.dropped_updates:
            lines.append(f"dropped updates (not in allowed_updates): {len(self.dropped_updates)}")
        return "\n".join(lines) or "(no requests)"

    async def wait_for(
        self,
        predicate: Callable[[], _T],
        timeout: float = 5.0,  # noqa: ASYNC109  (a polling deadline, not an I/O timeout)
        *,
        interval: float = 0.01,
    ) -> _T:
        """Poll ``predicate`` (real time) until it returns something truthy, and return that.

        On timeout raise AssertionError listing the recent requests: that dump is usually the
        fastest way to see what the bot actually did.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() >= deadline:
                raise AssertionError(
                    f"condition not met within {timeout}s; recent Bot API requests:\n{self.dump()}"
                )
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------------
# Front end 1: aiogram session
# --------------------------------------------------------------------------------------------


class FakeTelegramSession(BaseSession):
    """An aiogram session that talks to a :class:`FakeTelegram` in-process.

    The request goes through the same serialisation as ``AiohttpSession.build_form_data`` and the
    answer through aiogram's ``check_response``, so everything but the socket is real.
    """

    def __init__(self, fake: FakeTelegram, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fake = fake

    def build_params(self, bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any]:
        """The flat form fields a real HTTP session would send (files become placeholders)."""
        files: dict[str, InputFile] = {}
        params: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if not prepared:
                continue
            params[key] = prepared
        for key, input_file in files.items():
            params[key] = f"<file {input_file.filename or key}>"
        return params

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109  (BaseSession's signature)
    ) -> TelegramType:
        params = self.build_params(bot, method)
        status, body = await self.fake.handle(method.__api_method__, params)
        response = self.check_response(
            bot=bot, method=method, status_code=status, content=self.json_dumps(body)
        )
        return cast(TelegramType, response.result)

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109  (BaseSession's signature)
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("the fake Bot API serves no files")
        yield b""  # pragma: no cover  (makes this an async generator, as the base class expects)

    async def close(self) -> None:
        """Nothing to release."""


# --------------------------------------------------------------------------------------------
# Front end 2: HTTP server
# --------------------------------------------------------------------------------------------


class FakeTelegramServer:
    """The fake Bot API over HTTP on 127.0.0.1, for end-to-end tests (``TELEGRAM_API_URL``).

    Serves ``POST|GET {url}/bot{token}/{method}`` with query, urlencoded, multipart or JSON
    arguments, like api.telegram.org. Usage::

        async with FakeTelegramServer(fake) as server:
            session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
    """

    def __init__(self, fake: FakeTelegram, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("FakeTelegramServer is not started")
        return self._url

    @property
    def api(self) -> TelegramAPIServer:
        """The aiogram server description for :attr:`url`."""
        return TelegramAPIServer.from_base(self.url)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._on_method)
        app.router.add_route("*", "/{tail:.*}", self._on_other)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self._url = f"http://{self.host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._url = None

    async def __aenter__(self) -> FakeTelegramServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _on_method(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, str):
                        params[key] = value
                    elif isinstance(value, bytes | bytearray):
                        params[key] = bytes(value).decode("utf-8", errors="replace")
                    else:
                        params[key] = f"<file {value.filename}>"
        status, answer = await self.fake.handle(
            request.match_info["method"], params, token=request.match_info["token"]
        )
        return web.json_response(answer, status=status)

    async def _on_other(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )
