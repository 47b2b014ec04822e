"""Compiling the message catalogs (.po -> .mo) with Babel.

Kept free of aiogram so the build (setup.py's build_py) can load it by path with only Babel
installed; the app reaches it through `bot.i18n`.
"""

from __future__ import annotations

import string
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "relaygram"


class CatalogError(Exception):
    """A catalog that must not ship: unreadable, or a translation that breaks a placeholder."""


def placeholders(text: str) -> set[str]:
    """The `{name}` fields of a str.format template ("{{" escapes do not count)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def catalog_problems(catalog: Catalog) -> list[str]:
    """Translations whose `{placeholders}` differ from their msgid's (a KeyError, or a lost
    value, at run time). Untranslated entries are not problems here: gettext falls back to
    the English msgid for them."""
    problems = []
    for message in catalog:
        if not message.id or not isinstance(message.id, str):
            continue
        for translation in _translations(message):
            if translation and placeholders(translation) != placeholders(message.id):
                problems.append(
                    f"{catalog.locale}: {message.id!r} -> {translation!r}: placeholders differ"
                )
    return problems


def compile_catalogs(locales_dir: Path | str = LOCALES_DIR, domain: str = DOMAIN) -> list[Path]:
    """Compile every `<locale>/LC_MESSAGES/<domain>.po` under `locales_dir` into the `.mo`
    beside it. Returns the written files. Raises CatalogError (writing nothing) when a
    catalog cannot be read or breaks a placeholder; fuzzy entries are left out, as gettext's
    msgfmt does."""
    sources = sorted(Path(locales_dir).glob(f"*/LC_MESSAGES/{domain}.po"))
    catalogs = []
    for po in sources:
        locale = po.parent.parent.name
        try:
            with po.open("rb") as file:
                catalog = read_po(file, locale=locale, domain=domain)
        except Exception as exc:  # Babel raises several kinds for a malformed file
            raise CatalogError(f"{po}: {exc}") from exc
        problems = catalog_problems(catalog)
        if problems:
            raise CatalogError(f"{po}:\n  " + "\n  ".join(problems))
        catalogs.append((po, catalog))
    written = []
    for po, catalog in catalogs:
        mo = po.with_suffix(".mo")
        with mo.open("wb") as file:
            write_mo(file, catalog, use_fuzzy=False)
        written.append(mo)
    return written


def _translations(message: Message) -> list[str]:
    if isinstance(message.string, tuple | list):
        return [s for s in message.string if isinstance(s, str)]
    return [message.string] if isinstance(message.string, str) else []
