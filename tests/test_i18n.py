"""The catalogs (complete, placeholders intact, compilable, up to date with bot/texts.py) and
the choice of language (the chat's /lang choice, else the user's Telegram language, else
English)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from aiogram import Bot
from aiogram.types import (
    CallbackQuery,
    Chat,
    ErrorEvent,
    Message,
    MessageGenerationStopped,
    TelegramObject,
    Update,
    User,
)
from aiogram.utils.i18n import I18n
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po

from bot import texts
from bot.catalogs import CatalogError, compile_catalogs, placeholders
from bot.i18n import (
    DOMAIN,
    LANGUAGES,
    LOCALES_DIR,
    ChatLanguageMiddleware,
    choose_locale,
    create_i18n,
    language_of,
)
from handlers.scope import event_scope
from storage import ChatScope, Storage

BOT_ID = 42
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]


def read_catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def msgids(catalog: Catalog) -> list[str]:
    return [m.id for m in catalog if m.id and isinstance(m.id, str)]


# --- the catalogs ------------------------------------------------------------------------------


def test_the_template_has_every_text_of_bot_texts() -> None:
    """A text added to bot/texts.py without `python -m bot.i18n extract` would stay English."""
    keywords = {**DEFAULT_KEYWORDS, "__": None}
    source = Path(texts.__file__)
    extracted = {str(m[1]) for m in extract_from_file("python", str(source), keywords=keywords)}
    template = set(msgids(read_catalog(LOCALES_DIR / f"{DOMAIN}.pot")))
    assert extracted == template
    assert len(template) > 80


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_msgid_has_a_translation_with_the_same_placeholders(lang: str) -> None:
    template = msgids(read_catalog(LOCALES_DIR / f"{DOMAIN}.pot"))
    catalog = read_catalog(LOCALES_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po", lang)
    assert not catalog.fuzzy
    for msgid in template:
        message = catalog.get(msgid)
        assert message is not None, f"{lang}: {msgid!r} is missing"
        assert isinstance(message.string, str), f"{lang}: {msgid!r}"
        assert message.string.strip(), f"{lang}: {msgid!r} is not translated"
        assert not message.fuzzy, f"{lang}: {msgid!r} is fuzzy"
        assert placeholders(message.string) == placeholders(msgid), f"{lang}: {msgid!r}"
    obsolete = set(msgids(catalog)) - set(template)
    assert not obsolete, f"{lang}: entries no text uses any more: {obsolete}"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_are_not_english(lang: str) -> None:
    catalog = read_catalog(LOCALES_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po", lang)
    words = [m for m in catalog if m.id and any(c.isalpha() for c in str(m.id).replace("{", ""))]
    same = [m.id for m in words if m.string == m.id and placeholders(str(m.id)) == set()]
    assert same == [], same


def test_catalogs_compile_and_load(tmp_path: Path) -> None:
    locales = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, locales, ignore=shutil.ignore_patterns("*.mo"))

    written = compile_catalogs(locales)

    assert sorted(p.relative_to(locales).as_posix() for p in written) == [
        f"{lang}/LC_MESSAGES/{DOMAIN}.mo" for lang in TRANSLATED
    ]
    i18n = I18n(path=locales, default_locale="en", domain=DOMAIN)
    assert set(i18n.available_locales) == set(TRANSLATED)
    msgid = "This button is no longer valid."
    assert i18n.gettext(msgid, locale="en") == msgid
    assert i18n.gettext(msgid, locale="ru") == "Эта кнопка больше не действует."
    assert i18n.gettext(msgid, locale="zh") == "此按钮已失效。"


def test_a_translation_that_breaks_a_placeholder_is_not_compiled(tmp_path: Path) -> None:
    po = tmp_path / "ru" / "LC_MESSAGES" / f"{DOMAIN}.po"
    po.parent.mkdir(parents=True)
    po.write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "{agent} sent an empty answer."\nmsgstr "{agnet} прислал пустой ответ."\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="placeholders differ"):
        compile_catalogs(tmp_path)
    assert not po.with_suffix(".mo").exists()


def test_the_app_refuses_to_start_without_compiled_catalogs(tmp_path: Path) -> None:
    shutil.copytree(LOCALES_DIR, tmp_path / "locales", ignore=shutil.ignore_patterns("*.mo"))
    with pytest.raises(RuntimeError, match=r"python -m bot\.i18n"):
        create_i18n(tmp_path / "locales")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="no compiled catalog for ru, zh"):
        create_i18n(tmp_path / "empty")


def test_texts_are_lazy_and_follow_the_current_locale() -> None:
    i18n = create_i18n()
    with i18n.context():
        with i18n.use_locale("en"):
            assert str(texts.NOTHING_TO_STOP) == "There is no answer being written right now."
            assert texts.RESET_DONE.format(agent="Support") == (
                "🧹 Done — your next message starts a new conversation with Support."
            )
        with i18n.use_locale("ru"):
            assert str(texts.NOTHING_TO_STOP) == "Сейчас я ничего не пишу — останавливать нечего."
            assert str(texts.COMMAND_DESCRIPTIONS["lang"]) == "Сменить язык"
        with i18n.use_locale("zh"):
            assert texts.RESET_DONE.format(agent="Support") == (
                "🧹 好了——你的下一条消息将开始与“Support”的新对话。"
            )


# --- which language ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ru", "ru"),
        ("ru-RU", "ru"),
        ("RU", "ru"),
        ("zh", "zh"),
        ("zh-hans", "zh"),
        ("zh-cn", "zh"),
        ("zh-sg", "zh"),
        ("zh_CN", "zh"),
        ("zh-hant", "zh"),
        ("en", "en"),
        ("en-GB", "en"),
        ("de", "en"),
        ("uk", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_telegram_language_codes_map_to_ours(code: str | None, expected: str) -> None:
    assert language_of(code) == expected


@pytest.mark.parametrize(
    ("chat_choice", "telegram", "expected"),
    [
        ("zh", "ru", "zh"),  # the chat's choice wins
        ("en", "ru", "en"),
        (None, "ru", "ru"),  # then the user's Telegram language
        (None, "zh-hans", "zh"),
        (None, "fr", "en"),  # then English
        (None, None, "en"),
        ("klingon", "ru", "ru"),  # a stored value we do not know is ignored
    ],
)
def test_locale_order(chat_choice: str | None, telegram: str | None, expected: str) -> None:
    assert choose_locale(chat_choice, telegram) == expected


@pytest.fixture
async def store() -> AsyncIterator[Storage]:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield Storage.on_redis(redis)
    await redis.aclose()


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    bot = Bot(f"{BOT_ID}:TEST-TOKEN")
    yield bot
    await bot.session.close()


def message(chat_id: int, language_code: str | None, thread_id: int | None = None) -> Message:
    chat_type = "private" if chat_id > 0 else "supergroup"
    return Message(
        message_id=1,
        date=datetime.now(UTC),
        chat=Chat(id=chat_id, type=chat_type, is_forum=thread_id is not None),
        from_user=User(id=7, is_bot=False, first_name="U", language_code=language_code),
        text="hi",
        message_thread_id=thread_id,
        is_topic_message=thread_id is not None or None,
    )


async def locale_of(
    middleware: ChatLanguageMiddleware, event: TelegramObject, bot: Bot, store: Storage
) -> str:
    seen: list[str] = []

    async def handler(event: TelegramObject, data: dict[str, Any]) -> None:
        seen.append(middleware.i18n.current_locale)

    await middleware(handler, event, {"bot": bot, "store": store})
    return seen[0]


async def test_the_middleware_prefers_the_chat_choice_then_telegram_then_english(
    bot: Bot, store: Storage
) -> None:
    middleware = ChatLanguageMiddleware(create_i18n(), event_scope)
    assert await locale_of(middleware, message(5, "ru"), bot, store) == "ru"
    assert await locale_of(middleware, message(5, "pt-br"), bot, store) == "en"
    assert await locale_of(middleware, message(5, None), bot, store) == "en"

    await store.chat_prefs.set_language(ChatScope(BOT_ID, 5), "zh")
    assert await locale_of(middleware, message(5, "ru"), bot, store) == "zh"
    # Another chat of the same user keeps following the user's language.
    assert await locale_of(middleware, message(6, "ru"), bot, store) == "ru"


async def test_the_choice_of_a_forum_topic_is_its_own(bot: Bot, store: Storage) -> None:
    middleware = ChatLanguageMiddleware(create_i18n(), event_scope)
    await store.chat_prefs.set_language(ChatScope(BOT_ID, -100, 3), "zh")
    assert await locale_of(middleware, message(-100, "ru", thread_id=3), bot, store) == "zh"
    assert await locale_of(middleware, message(-100, "ru", thread_id=4), bot, store) == "ru"


async def test_button_presses_stopped_drafts_and_errors_get_the_chats_language(
    bot: Bot, store: Storage
) -> None:
    middleware = ChatLanguageMiddleware(create_i18n(), event_scope)
    await store.chat_prefs.set_language(ChatScope(BOT_ID, 5), "ru")
    under = message(5, "en")
    query = CallbackQuery(
        id="1",
        from_user=User(id=5, is_bot=False, first_name="U", language_code="en"),
        chat_instance="c",
        message=under,
        data="x",
    )
    stopped = MessageGenerationStopped(chat=Chat(id=5, type="private"), draft_id=9)
    error = ErrorEvent(update=Update(update_id=1, message=under), exception=RuntimeError())

    for event in (query, stopped, error):
        assert await locale_of(middleware, event, bot, store) == "ru", event

    await store.chat_prefs.set_language(ChatScope(BOT_ID, 5), None)
    zh_query = query.model_copy(
        update={"from_user": User(id=5, is_bot=False, first_name="U", language_code="zh-hans")}
    )
    assert await locale_of(middleware, zh_query, bot, store) == "zh"
    assert await locale_of(middleware, stopped, bot, store) == "en"  # no user to go by


async def test_a_redis_failure_falls_back_to_the_users_language(bot: Bot) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    middleware = ChatLanguageMiddleware(create_i18n(), event_scope)
    try:
        assert await locale_of(middleware, message(5, "zh"), bot, Storage.on_redis(redis)) == "zh"
    finally:
        await redis.aclose()
