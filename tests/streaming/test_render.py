"""Markdown -> Telegram text + entities, and pagination of a growing answer into messages."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from bot.streaming.render import (
    ENTITY_LIMIT,
    TEXT_LIMIT,
    Paginator,
    RenderedText,
    render_markdown,
    utf16_len,
)
from bot.streaming.render import Entity as MessageEntity


def covered(rendered: RenderedText, entity: MessageEntity) -> str:
    """The text an entity covers, cut by UTF-16 offsets as Telegram does."""
    units = rendered.text.encode("utf-16-le")
    return units[entity.offset * 2 : (entity.offset + entity.length) * 2].decode("utf-16-le")


def spans(rendered: RenderedText) -> list[tuple[str, str]]:
    return [(e.type, covered(rendered, e)) for e in rendered.entities]


def assert_fits(page: RenderedText) -> None:
    assert utf16_len(page.text) <= TEXT_LIMIT, f"page of {utf16_len(page.text)} UTF-16 units"
    assert len(page.entities) <= ENTITY_LIMIT, f"page with {len(page.entities)} entities"
    for entity in page.entities:
        assert entity.length > 0
        assert entity.offset + entity.length <= utf16_len(page.text)


# --- render_markdown ------------------------------------------------------------------------------


def test_bold_code_and_link_become_entities() -> None:
    rendered = render_markdown("**Bold** then `code()` and [the docs](https://example.com/d).")

    assert rendered.text == "Bold then code() and the docs."
    assert spans(rendered) == [("bold", "Bold"), ("code", "code()"), ("text_link", "the docs")]
    assert rendered.entities[2].url == "https://example.com/d"


def test_fenced_code_block_is_pre_with_its_language() -> None:
    rendered = render_markdown("Run:\n\n```python\nprint('hi')\n```\n\nDone.")

    pre = [e for e in rendered.entities if e.type == "pre"]
    assert len(pre) == 1
    assert pre[0].language == "python"
    assert covered(rendered, pre[0]).strip() == "print('hi')"
    assert "```" not in rendered.text
    assert rendered.text.startswith("Run:")
    assert rendered.text.endswith("Done.")


@pytest.mark.parametrize("prefix", ["😀 ", "👍🏽👍🏽 ", "𝔘𝔫𝔦 ", "é "])
def test_offsets_count_utf16_units_after_emoji(prefix: str) -> None:
    rendered = render_markdown(f"{prefix}**bold** and `code`")

    assert spans(rendered) == [("bold", "bold"), ("code", "code")]
    assert rendered.entities[0].offset == utf16_len(prefix)


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("Use Vec<T> here", "Vec<T>"),
        ("if a < b and b > c", "a < b and b > c"),
        ("HashMap<String, Vec<u8>> works", "HashMap<String, Vec<u8>>"),
        ("a <b>not bold</b> c", "<b>not bold</b>"),
        ("x <br> y", "<br>"),
    ],
)
def test_angle_brackets_and_html_are_shown_not_dropped(source: str, shown: str) -> None:
    rendered = render_markdown(source)

    assert shown in rendered.text
    assert not rendered.entities


def test_autolink_stays_a_link() -> None:
    rendered = render_markdown("see <http://x.y> now")

    assert rendered.text == "see http://x.y now"
    links = [e for e in rendered.entities if e.type in ("text_link", "url")]
    assert [covered(rendered, e) for e in links] == ["http://x.y"]


def test_html_inside_code_is_untouched() -> None:
    rendered = render_markdown("use `<div>` here\n\n```html\n<b>x</b> & a < b\n```")

    assert ("code", "<div>") in spans(rendered)
    pre = next(e for e in rendered.entities if e.type == "pre")
    assert covered(rendered, pre).strip() == "<b>x</b> & a < b"
    assert "\\<" not in rendered.text


def test_half_written_bold_shows_literally() -> None:
    rendered = render_markdown("The answer is **almost")

    assert rendered.text == "The answer is **almost"
    assert not rendered.entities


def test_half_written_code_block_is_still_code() -> None:
    rendered = render_markdown("```python\ndef f():\n    return")

    assert "def f():" in rendered.text
    assert "```" not in rendered.text


@pytest.mark.parametrize("source", ["", "   ", "\n\n", " \n \t"])
def test_empty_or_blank_input_gives_no_text(source: str) -> None:
    rendered = render_markdown(source)

    assert rendered.text.strip() == ""
    assert rendered.entities == ()


@pytest.mark.parametrize("source", ["[x]: https://example.com", "[]()"])
def test_markdown_that_renders_to_nothing_is_shown_as_written(source: str) -> None:
    # A bare link reference definition renders to nothing: sending that would lose the text
    # (and Telegram refuses an empty message).
    assert render_markdown(source).text == source


def test_rendered_texts_concatenate_with_shifted_offsets() -> None:
    joined = render_markdown("😀 **a**") + render_markdown("`b`")

    assert spans(joined) == [("bold", "a"), ("code", "b")]


# --- Paginator ------------------------------------------------------------------------------------


def decorated_answer(rng: random.Random, words: int) -> tuple[str, list[str]]:
    """A long Markdown answer, and the plain words it must show in order.

    Words are decorated at random (bold, italic, code, links, emoji); there are paragraphs,
    lists and a fenced code block or two, so cuts land everywhere.
    """
    parts: list[str] = []
    shown: list[str] = []
    for i in range(words):
        word = f"w{i}"
        shown.append(word)
        style = rng.random()
        if style < 0.12:
            parts.append(f"**{word}**")
        elif style < 0.18:
            parts.append(f"_{word}_")
        elif style < 0.24:
            parts.append(f"`{word}`")
        elif style < 0.28:
            parts.append(f"[{word}](https://example.com/{i})")
        elif style < 0.31:
            parts.append(f"😀{word}")
        else:
            parts.append(word)
        gap = rng.random()
        if gap < 0.02:
            parts.append("\n\n- ")
        elif gap < 0.06:
            parts.append("\n\n")
        elif gap < 0.065:
            lines = "\n".join(f"code_{i}_{n} = {n}" for n in range(rng.randint(3, 120)))
            parts.append(f"\n\n```python\n{lines}\n```\n\n")
        else:
            parts.append(" ")
    return "".join(parts), shown


def grow(paginator: Paginator, source: str, rng: random.Random) -> list[list[RenderedText]]:
    """Feed the source in small random increments; every intermediate pagination."""
    history: list[list[RenderedText]] = []
    end = 0
    while end < len(source):
        end = min(len(source), end + rng.randint(1, 400))
        history.append(paginator.paginate(source[:end]))
    return history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_growing_answer_keeps_earlier_pages_fixed_and_loses_nothing(seed: int) -> None:
    rng = random.Random(seed)
    source, words = decorated_answer(rng, 5000)
    paginator = Paginator()

    history = grow(paginator, source, rng)

    final = history[-1]
    assert len(final) >= 3, "the answer is long enough to need several messages"
    for earlier, later in itertools.pairwise(history):
        # Every page but the open (last) one is sealed: a later call shows it unchanged.
        sealed = earlier[:-1]
        assert later[: len(sealed)] == sealed
        assert len(later) >= len(earlier)
    for pages in history:
        for page in pages:
            assert_fits(page)
    text = "\n".join(page.text for page in final)
    assert re.findall(r"\bw\d+\b", text) == words
    assert "**" not in text, "no bold was torn apart by a cut"


def test_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    lines = [f"value_{n} = compute({n})  # step {n}" for n in range(400)]
    source = "Here is the script:\n\n```python\n" + "\n".join(lines) + "\n```\n\nThat is all."

    pages = Paginator().paginate(source)

    assert len(pages) >= 3
    for page in pages:
        assert_fits(page)
        assert "```" not in page.text, "every page's fence is closed, none shows literally"
    code_pages = [p for p in pages if any(f"value_{n} =" in p.text for n in range(400))]
    assert len(code_pages) >= 3
    for page in code_pages:
        pre = [e for e in page.entities if e.type == "pre"]
        assert len(pre) == 1
        assert pre[0].language == "python"
    shown = re.findall(r"value_(\d+) =", "\n".join(p.text for p in pages))
    assert shown == [str(n) for n in range(400)]
    assert pages[0].text.startswith("Here is the script:")
    assert pages[-1].text.endswith("That is all.")
    last_pre = [covered(pages[-1], e) for e in pages[-1].entities if e.type == "pre"]
    assert all("That is all." not in code for code in last_pre), "the fence was closed"


def test_code_block_split_while_growing_keeps_sealed_pages() -> None:
    lines = [f"row {n}: " + "x" * (n % 50) for n in range(500)]
    source = "```sql\n" + "\n".join(lines) + "\n```\n"
    paginator = Paginator()

    history = grow(paginator, source, random.Random(11))

    for earlier, later in itertools.pairwise(history):
        assert later[: len(earlier) - 1] == earlier[:-1]
    final = history[-1]
    assert len(final) >= 3
    for page in final:
        pre = [e for e in page.entities if e.type == "pre"]
        assert [e.language for e in pre] == ["sql"]
    shown = re.findall(r"row (\d+):", "\n".join(p.text for p in final))
    assert shown == [str(n) for n in range(500)]


def test_entity_heavy_answer_is_split_at_100_entities() -> None:
    source = " ".join(f"**b{i}** `c{i}`" for i in range(300))

    pages = Paginator().paginate(source)

    assert len(pages) >= 6
    for page in pages:
        assert_fits(page)
    text = " ".join(p.text for p in pages)
    assert re.findall(r"\bb\d+\b", text) == [f"b{i}" for i in range(300)]
    assert sum(len(p.entities) for p in pages) == 600, "every word keeps its formatting"


def test_a_replacement_that_does_not_extend_the_text_restarts_pagination() -> None:
    first = " ".join(f"old{i}" for i in range(2500))
    second = " ".join(f"new{i}" for i in range(1500))
    paginator = Paginator()
    assert len(paginator.paginate(first)) >= 2

    pages = paginator.paginate(second)

    assert pages == Paginator().paginate(second)
    text = " ".join(p.text for p in pages)
    assert "old" not in text
    assert re.findall(r"new\d+", text) == [f"new{i}" for i in range(1500)]


def test_a_replacement_inside_the_open_page_only_changes_that_page() -> None:
    base = " ".join(f"w{i}" for i in range(1500))
    paginator = Paginator()
    before = paginator.paginate(base + " tail draft")

    after = paginator.paginate(base + " tail final")

    assert len(before) >= 2
    assert after[:-1] == before[:-1]
    assert after[-1].text.endswith("tail final")


def test_a_single_huge_word_is_hard_split_without_loss() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(10_000))

    pages = Paginator().paginate(word)

    assert len(pages) == 3
    for page in pages:
        assert_fits(page)
    assert "".join(p.text for p in pages) == word


def test_a_huge_word_of_emoji_is_split_on_utf16_limits() -> None:
    word = "😀" * 5000  # 10,000 UTF-16 units

    pages = Paginator().paginate(word)

    for page in pages:
        assert_fits(page)
    assert "".join(p.text for p in pages) == word


def test_first_page_can_leave_room_above_the_answer() -> None:
    source = " ".join(f"w{i}" for i in range(2000))

    pages = Paginator(first_limit=3000).paginate(source)

    assert utf16_len(pages[0].text) <= 3000
    assert utf16_len(pages[1].text) > 3000
    assert re.findall(r"w\d+", " ".join(p.text for p in pages)) == source.split()


def test_empty_source_has_no_pages() -> None:
    paginator = Paginator()

    assert paginator.paginate("") == []
    assert paginator.paginate("  \n") == []
