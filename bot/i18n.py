"""The bot's languages: English, Russian and Chinese (Simplified), through aiogram's gettext i18n.

An update is answered in the chat's `/lang` choice (kept in the chat's preferences), else in
the language of the user's Telegram app mapped to one of ours (`language_of`), else in
English. `ChatLanguageMiddleware` sets that locale for the whole handling of an update, so the
lazy texts of `bot.texts` translate wherever they are used (services and the streaming tasks a
handler starts inherit the locale: contextvars are copied into tasks).

Catalogs live in bot/locales: relaygram.pot (the msgids, extracted from bot/texts.py) and
<lang>/LC_MESSAGES/relaygram.po (the translations); both are sources, in git. The .mo files are
build outputs: building the package compiles them into it (setup.py), and
`python -m bot.i18n` compiles them in the source tree (scripts/test.sh and scripts/run.sh do,
after installing). After changing texts: `python -m bot.i18n extract` refreshes the .pot and
merges it into the .po files; translate what is new, then compile.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from aiogram import Bot, Dispatcher
from aiogram.types import ErrorEvent, TelegramObject, User
from aiogram.utils.i18n import I18n, I18nMiddleware
from redis.exceptions import RedisError

from bot.catalogs import DOMAIN, LOCALES_DIR, CatalogError, compile_catalogs
from storage import ChatScope, Storage

__all__ = [
    "AUTO",
    "DEFAULT_LOCALE",
    "DOMAIN",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "LOCALES_DIR",
    "ChatLanguageMiddleware",
    "choose_locale",
    "compile_catalogs",
    "create_i18n",
    "language_of",
]

logger = logging.getLogger("relaygram.i18n")

DEFAULT_LOCALE: Final = "en"
LANGUAGES: Final = ("en", "ru", "zh")
AUTO: Final = "auto"  # /lang auto: no choice for the chat, each user's Telegram language
# Each language as it calls itself: what /lang shows, never translated.
LANGUAGE_NAMES: Final = {"en": "English", "ru": "Русский", "zh": "中文"}

# The chat scope an event belongs to (None: none, e.g. an inline query).
ScopeOf = Callable[[TelegramObject, int], ChatScope | None]


def create_i18n(path: Path | str = LOCALES_DIR) -> I18n:
    """aiogram's I18n over the compiled catalogs; refuses to start without them, since a
    missing catalog would silently answer everyone in English."""
    try:
        i18n = I18n(path=path, default_locale=DEFAULT_LOCALE, domain=DOMAIN)
    except RuntimeError as exc:  # aiogram: a .po without its .mo
        raise RuntimeError(f"{exc} Compile the catalogs: python -m bot.i18n") from exc
    missing = [lang for lang in LANGUAGES if lang != DEFAULT_LOCALE]
    missing = [lang for lang in missing if lang not in i18n.available_locales]
    if missing:
        raise RuntimeError(
            f"no compiled catalog for {', '.join(missing)} in {i18n.path}; "
            "compile them with: python -m bot.i18n"
        )
    return i18n


def language_of(code: str | None) -> str:
    """Telegram's `language_code` (IETF, e.g. "ru", "zh-hans", "pt-br") -> en, ru or zh."""
    primary = (code or "").strip().lower().replace("_", "-").split("-")[0]
    if primary == "ru":
        return "ru"
    if primary == "zh":  # zh, zh-hans, zh-cn, zh-sg (and the Traditional ones) read Simplified
        return "zh"
    return DEFAULT_LOCALE


def choose_locale(chat_choice: str | None, telegram_language: str | None) -> str:
    """The order: the chat's /lang choice, the user's Telegram language, English."""
    if chat_choice in LANGUAGES:
        return chat_choice
    return language_of(telegram_language)


class ChatLanguageMiddleware(I18nMiddleware):
    """Sets the locale for messages, button presses, stopped drafts and the error handler.

    Register it (`register`) before any other outer middleware, so that refusals are
    translated too. Handlers get the I18n instance as the `i18n` argument.
    """

    def __init__(self, i18n: I18n, scope_of: ScopeOf) -> None:
        super().__init__(i18n)
        self._scope_of = scope_of

    def register(self, dispatcher: Dispatcher) -> None:
        for observer in (
            dispatcher.message,
            dispatcher.callback_query,
            dispatcher.stopped_message_generation,
            dispatcher.errors,  # the safety net's "something went wrong" in the user's language
        ):
            observer.outer_middleware(self)

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        if isinstance(event, ErrorEvent):
            try:
                event = event.update.event
            except LookupError:
                return DEFAULT_LOCALE
        user = getattr(event, "from_user", None)
        if not isinstance(user, User):
            user = data.get("event_from_user")
        telegram_language = user.language_code if isinstance(user, User) else None
        return choose_locale(await self._chat_choice(event, data), telegram_language)

    async def _chat_choice(self, event: TelegramObject, data: dict[str, Any]) -> str | None:
        bot = data.get("bot")
        store = data.get("store")
        if not isinstance(bot, Bot) or not isinstance(store, Storage):
            return None
        scope = self._scope_of(event, bot.id)
        if scope is None:
            return None
        try:
            return (await store.chat_prefs.get(scope)).language
        except RedisError as exc:  # answer in the user's language rather than not at all
            logger.warning("cannot read the language chosen for %s: %s", scope.key, exc)
            return None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bot.i18n`: compile the catalogs in the source tree.
    `python -m bot.i18n extract`: refresh relaygram.pot from bot/texts.py and merge it into
    every .po (new msgids arrive untranslated; the tests insist on complete translations)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["extract"]:
        return _extract()
    if args:
        print("usage: python -m bot.i18n [extract]", file=sys.stderr)
        return 2
    try:
        written = compile_catalogs(LOCALES_DIR)
    except CatalogError as exc:
        print(f"catalogs not compiled: {exc}", file=sys.stderr)
        return 1
    for mo in written:
        print(f"compiled {mo}")
    return 0


def _extract() -> int:
    from babel.messages.frontend import CommandLineInterface

    pot = LOCALES_DIR / f"{DOMAIN}.pot"
    common = ["--no-wrap"]
    cli = CommandLineInterface()
    cli.run(  # type: ignore[no-untyped-call]
        [
            "pybabel",
            "extract",
            "--keyword=__",
            "--add-comments=Translators:",
            "--no-location",
            "--project=relaygram",
            f"--output-file={pot}",
            *common,
            str(Path(__file__).resolve().parent / "texts.py"),
        ]
    )
    for lang in LANGUAGES:
        if lang != DEFAULT_LOCALE and not (LOCALES_DIR / lang).exists():
            cli.run(  # type: ignore[no-untyped-call]
                [
                    "pybabel",
                    "init",
                    f"--input-file={pot}",
                    f"--output-dir={LOCALES_DIR}",
                    f"--domain={DOMAIN}",
                    f"--locale={lang}",
                    *common,
                ]
            )
    cli.run(  # type: ignore[no-untyped-call]
        [
            "pybabel",
            "update",
            f"--input-file={pot}",
            f"--output-dir={LOCALES_DIR}",
            f"--domain={DOMAIN}",
            "--ignore-pot-creation-date",
            *common,
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
