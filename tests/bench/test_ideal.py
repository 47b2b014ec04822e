"""The benchmark's reference scheduler and metrics: exact, deterministic and fast (no timing)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from bot.streaming.budget import BotWindow
from tests.bench.streaming import (
    IdealAnswer,
    at_bot_budget,
    common_prefix,
    first_text,
    ideal_replay,
    make_tokens,
    pacing_interval,
    page_ends,
    percentile,
    plan_answers,
    produced_chars,
    screen_snapshots,
    seen_steps,
    staleness,
    visible,
)
from tests.bench.streaming import StreamShape as Shape
from tests.fakes.telegram import Burst, FakeTelegram, FloodLimits, ManualClock, RateLimit

LIMITS = FloodLimits.telegram()


def steady(start: float, seconds: float, every: float = 0.1) -> tuple[tuple[float, int], ...]:
    """One character every `every` seconds from `start` (inclusive) for `seconds`."""
    count = round(seconds / every)
    return tuple((start + k * every, 1) for k in range(count + 1))


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most calls in any half-open window (t - window, t], as the fake counts them."""
    ordered = sorted(times)
    best = 0
    first = 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - window + 1e-9:
            first += 1
        best = max(best, last - first + 1)
    return best


def within_bucket(times: Sequence[float], limit: Burst) -> bool:
    tokens, updated = limit.capacity, None
    for at in sorted(times):
        if updated is not None:
            tokens = min(limit.capacity, tokens + (at - updated) * limit.per_second)
        updated = at
        if tokens < 1.0 - 1e-9:
            return False
        tokens -= 1.0
    return True


# --- the ideal scheduler --------------------------------------------------------------------------


def test_a_private_answer_shows_its_first_text_at_once_then_paces_within_the_bucket() -> None:
    arrivals = steady(5.0, 10.0)
    result = ideal_replay([IdealAnswer(True, arrivals)], LIMITS)
    times = [at for at, _ in result.sends]

    assert result.first_seen == [5.0]
    assert within_bucket(times, Burst(3, 1.0))
    assert times[-1] == pytest.approx(15.0), "the last character is shown when it arrives"
    assert result.chars == len(arrivals)
    # Spread over the answer, the two burst tokens buy updates faster than 1/s: 10/12 s apart.
    assert pacing_interval(Burst(3, 1.0), 10.0) == pytest.approx(10 / 12)
    assert 0.35 < result.average < 0.5


def test_a_group_answer_is_paced_to_its_rolling_window_not_burnt_at_the_start() -> None:
    arrivals = steady(0.0, 75.0)
    result = ideal_replay([IdealAnswer(False, arrivals)], LIMITS)
    times = [at for at, _ in result.sends]

    assert max_in_window(times, 60.0) <= 20
    assert 25 <= len(times) <= 28, "about 20 a minute, evenly"
    assert max(b - a for a, b in itertools.pairwise(times)) < 3.2
    assert result.average == pytest.approx(1.5, abs=0.1)


def test_one_call_shows_one_message_of_a_longer_answer() -> None:
    # 6,000 characters at once, messages of 4,000: the first call fills the first message,
    # a second call (the bucket's burst allows it at once) starts the next.
    result = ideal_replay([IdealAnswer(True, ((0.0, 6_000),), pages=(4_000,))], LIMITS)

    assert result.sends == [(0.0, 0), (0.0, 0)]
    assert result.chars == 6_000
    assert result.staleness == 0.0


def test_the_rest_of_a_message_waits_for_the_chats_limit_like_any_call() -> None:
    # A chunk a second for 20 s: one call each, the group's whole minute. The message ends
    # inside the last chunk, so its rest takes a 21st call, which waits for the window.
    arrivals = tuple((float(k), 300) for k in range(20))
    result = ideal_replay([IdealAnswer(False, arrivals, pages=(5_850,))], LIMITS)
    times = [at for at, _ in result.sends]

    assert max_in_window(times, 60.0) <= 20
    assert len(times) == 21
    assert times[-1] == pytest.approx(60.0)
    assert result.chars == 6_000
    assert ideal_replay([IdealAnswer(False, arrivals)], LIMITS).average == 0.0
    assert result.average > 0.0


def test_pages_end_every_4096_rendered_characters_counted_without_whitespace() -> None:
    tokens = ["**bold** ", "word " * 1_000, "end"]  # 8 + 1 + 5,000 + 3 rendered characters
    rendered = "bold " + "word " * 1_000 + "end"

    assert page_ends(tokens) == (len(visible(rendered[:4096])),)
    assert page_ends(["short"]) == ()


def test_the_final_text_is_not_held_back_by_pacing() -> None:
    # Chunks at 0 and 0.5 s: the pace for a 0.5 s answer is 0.25 s, but the second chunk is
    # the last one, so it goes as soon as the bucket allows: at once.
    result = ideal_replay([IdealAnswer(True, ((0.0, 3), (0.5, 4)))], LIMITS)
    assert result.sends == [(0.0, 0), (0.5, 0)]
    assert result.staleness == 0.0
    assert result.chars == 7


def test_under_the_bot_wide_limit_first_texts_go_first_and_no_second_holds_more_than_30() -> None:
    answers = [IdealAnswer(True, steady(0.01 * i, 20.0)) for i in range(100)]
    result = ideal_replay(answers, LIMITS)
    times = [at for at, _ in result.sends]

    assert max_in_window(times, 1.0) <= 30
    first_sends = result.sends[:100]
    assert sorted(index for _, index in first_sends) == list(range(100)), "every first text first"
    assert all(at is not None for at in result.first_seen)
    assert result.first_seen[:30] == pytest.approx([0.01 * i for i in range(30)])
    for index in range(100):
        chat_times = [at for at, i in result.sends if i == index]
        assert within_bucket(chat_times, Burst(3, 1.0))


def test_the_bot_budget_reference_keeps_the_bots_longer_window() -> None:
    answers = [IdealAnswer(True, steady(0.0, 5.0)) for _ in range(60)]
    limits = at_bot_budget(LIMITS, BotWindow.per_second(30.0))
    result = ideal_replay(answers, limits)
    times = sorted(at for at, _ in result.sends)

    assert max_in_window(times, 1.005) <= 30
    assert max_in_window(times, 0.01) == 30, "bursts of 30 go at once"
    assert result.average > ideal_replay(answers, LIMITS).average


def test_nothing_to_send_is_an_empty_result() -> None:
    result = ideal_replay([IdealAnswer(True, ())], LIMITS)
    assert result.sends == []
    assert result.first_seen == [None]


# --- metrics ------------------------------------------------------------------------------------


def test_common_prefix() -> None:
    assert common_prefix("abc", "abcdef") == 3
    assert common_prefix("abcdef", "abc") == 3
    assert common_prefix("abxdef", "abcdef") == 2
    assert common_prefix("", "abc") == 0


def test_staleness_counts_each_character_from_its_chunk_to_the_first_screen_showing_it() -> None:
    # Chunks: "ab" at 1.0, "cd" at 2.0, "e" at 3.0. Screens: "a b" at 1.5, "abc" at 2.5, a
    # regression to "ab" at 2.6 (a draft replaced), everything at 4.0.
    produced = [(1.0, 2), (2.0, 2), (3.0, 1)]
    shots = [(1.5, visible("a b")), (2.5, "abc"), (2.6, "ab"), (4.0, "abcde")]
    steps = seen_steps(shots, "abcde")
    assert steps == [(1.5, 2), (2.5, 3), (4.0, 5)]

    result = staleness(produced, steps)
    # a, b: 0.5 each; c: 0.5; d: 2.0; e: 1.0
    assert result.total == pytest.approx(4.5)
    assert result.chars == 5
    assert result.unseen == 0
    assert result.first_seen == 1.5


def test_staleness_of_an_answer_never_fully_shown_counts_only_what_was_seen() -> None:
    result = staleness([(0.0, 3), (1.0, 3)], [(0.5, 2)])
    assert result.chars == 2
    assert result.unseen == 4
    assert result.total == pytest.approx(1.0)


def test_first_text_compares_distributions_and_pairs() -> None:
    chunk = [0.0, 0.0, 0.0, 0.0]
    ideal = [0.0, 0.0, 1.0, 1.0]
    actual = [1.1, 1.2, 0.1, 0.2]  # the same delays, in another order
    result = first_text(actual, ideal, chunk)
    assert result.added_p50 == pytest.approx(0.2 - 0.0)
    assert result.added_p99 == pytest.approx(1.2 - 1.0)
    assert result.paired_p99 == pytest.approx(1.2)
    assert result.actual_p50 == pytest.approx(0.2)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) != percentile([], 50)  # nan


# --- the workload -------------------------------------------------------------------------------


def test_plans_are_the_same_for_the_same_seed_and_kinds_follow_the_mix() -> None:
    shape = Shape(tokens=50, interval=0.1)
    first = plan_answers(4, "mixed", shape, Shape(tokens=80, interval=0.1), seed=7)
    again = plan_answers(4, "mixed", shape, Shape(tokens=80, interval=0.1), seed=7)
    assert first == again
    assert [p.private for p in first] == [True, False, True, False]
    assert [len(p.tokens) for p in first] == [50, 80, 50, 80]
    assert first[0].chat_id > 0 > first[1].chat_id
    assert all(0.075 <= gap <= 0.125 for plan in first for gap in plan.gaps)


def test_tokens_are_prose_whose_visible_characters_are_known() -> None:
    tokens = make_tokens(random.Random(3), 2000)
    text = "".join(tokens)
    assert not set(text) & set("_`[]()#>~|<"), "no Markdown but **bold**"
    assert text.count("**") % 2 == 0
    assert produced_chars("**word**. ") == "word."


# --- what the user saw --------------------------------------------------------------------------


async def test_screen_snapshots_follow_drafts_messages_and_edits() -> None:
    clock = ManualClock(100.0)
    fake = FakeTelegram(clock=clock)
    private, group = 10, -20
    fake.register_chat(group, "supergroup")

    async def call(method: str, **params: object) -> None:
        status, body = await fake.handle(method, params)
        assert status == 200, body

    await call("sendMessageDraft", chat_id=private, draft_id=5, text="Hel")
    clock.advance(1)
    await call("sendMessageDraft", chat_id=private, draft_id=5, text="Hello wor")
    clock.advance(1)
    await call("sendMessage", chat_id=private, text="Hello world")  # clears the draft
    await call("sendMessage", chat_id=group, text="One")
    clock.advance(1)
    await call("editMessageText", chat_id=group, message_id=1, text="One two")
    await call("sendMessage", chat_id=group, text="three")

    shots = screen_snapshots(fake, [private, group])
    assert shots[private] == [(100.0, "Hel"), (101.0, "Hellowor"), (102.0, "Helloworld")]
    assert shots[group] == [(102.0, "One"), (103.0, "Onetwo"), (103.0, "Onetwothree")]
    assert seen_steps(shots[group], "Onetwothreefour")[-1] == (103.0, 11)


def test_window_checker_matches_the_fakes_rule() -> None:
    # A call exactly `window` after another does not count it (the fake drops hits <= now - w).
    assert max_in_window([0.0, 60.0], 60.0) == 1
    assert max_in_window([0.0, 59.9], 60.0) == 2
    assert RateLimit(20, 60.0).max_calls == 20
