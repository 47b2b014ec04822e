"""The streaming benchmark: the real bot, the fake Bot API with Telegram's limits, a fake agent.

Run it from the repository root::

    .venv/bin/python -m tests.bench.streaming          # 1, 100, 1000 answers x private, group
    .venv/bin/python -m tests.bench.streaming --quick  # a one-minute smoke run
    .venv/bin/python -m tests.bench.streaming --answers 100 --mix mixed --tokens 300 --interval 0.05

Two processes, so that the bot's CPU time and memory are its own:

- this one (the harness) runs `FakeTelegramServer` with `FloodLimits.telegram()` (private chats
  Burst(3, 1/s), groups 20 per rolling 60 s, the bot 30 per rolling second) and a fake
  OpenAI-compatible agent that streams a seeded, jittered token stream over real HTTP and
  records when it wrote every chunk;
- the bot is `python -m bot run` (= `relaygram run`), started once per run with `BOT_TOKEN`,
  `TELEGRAM_API_URL`, `AGENTS_FILE` (one `platform = "openai"` agent), `REDIS_URL` (a dedicated
  db of the local Redis, flushed before every run) and `STREAM_MODE=auto`. On a machine with two
  or more cores the bot is pinned to core 0 and the harness to core 1: "on one core" literally.

Each run pushes N user messages at once into the fake's update queue (N private chats, N groups
with an @mention, or half and half); the bot long-polls them. From what the fake recorded:

- 429 answers the bot received (target 0);
- visible-text staleness: for every character of every answer, the time from the agent writing
  it to the user seeing it (a message, an edit or a draft that shows it), averaged. What the user
  sees is matched to the answer by the longest common prefix of the whitespace-free text, so
  pagination and Markdown rendering do not matter. The same chunk arrival times are replayed
  through `ideal_replay` (zero latency, the fake's exact limits) for the best achievable value;
  the ratio is the target (<= 1.15);
- bot-added latency to the first visible text: a percentile of the bot's delays from the first
  chunk to the first text on screen minus the same percentile of the ideal's, p50/p99 (target
  p99 <= 50 ms at 100 answers); the per-answer difference too, and both again against the
  ideal at the bot's own bot-wide budget (30 calls in any 1.005 s: `BotWindow`);
- the bot's CPU seconds (utime + stime from /proc/<pid>/stat, from the first message pushed to
  the last final state) per chunk the agent wrote (target <= 1 ms), the CPU cores it used on
  average and in its busiest second, and its peak RSS (VmHWM, target <= 150 MB).

BENCHMARKS.md explains the method and holds the recorded results (`--write`).

Speeds are printed, never asserted: `test_ideal.py` only checks the replay and the metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from aiohttp import web

from bot.streaming.budget import BotWindow
from tests.fakes.telegram import (
    Burst,
    FakeTelegram,
    FakeTelegramServer,
    FloodLimits,
    RateLimit,
)

Mix = Literal["private", "group", "mixed"]
MIXES: Final[tuple[Mix, ...]] = ("private", "group", "mixed")

REPO: Final = Path(__file__).resolve().parents[2]
BENCHMARKS_FILE: Final = REPO / "BENCHMARKS.md"
BOT_TOKEN: Final = "4242:BENCH-streaming"
BOT_USERNAME: Final = "relaygram_bench_bot"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/14"
GROUP_BASE: Final = -1_000_000_000_000  # supergroup ids: GROUP_BASE - i
GROUP_USER_BASE: Final = 500_000_000  # the user asking in group i: GROUP_USER_BASE + i
EPS: Final = 1e-9
MESSAGE_LIMIT: Final = 4096  # Telegram's longest message, in UTF-16 code units
# The bot's own bot-wide budget at BOT_REQUESTS_PER_SECOND=30: 30 calls in any 1.005 s.
BOT_BUDGET: Final = BotWindow.per_second(30.0)

# Default token streams. Groups get 20 messages a minute, so a group answer lasts long enough
# (90 s) to see ~30 updates and to roll over into a second message (~4,800 characters).
PRIVATE_TOKENS: Final = 200
GROUP_TOKENS: Final = 900
INTERVAL: Final = 0.1  # seconds between tokens (10 tokens/s per answer), jittered +-25 %
JITTER: Final = 0.25
QUICK_PRIVATE_TOKENS: Final = 60
QUICK_GROUP_TOKENS: Final = 150


# --- the workload ------------------------------------------------------------------------------

_PROSE: Final = """
    the of and to in is that for it as with was on be by this are from or at an have not but
    which one all were we when there can more if will about so what their out up into has time
    some could them other than then its only new also two any these may first way like over
    such our use how work made well after many most world even where through because each
    just people those much back state good before large while under system long never right
    answer stream message agent token model group chat reply draft edit limit budget second
    minute window text render page telegram user question server client request response
"""
_WORDS: Final = tuple(_PROSE.split())


@dataclass(frozen=True, slots=True)
class StreamShape:
    """How one agent answer streams: `tokens` chunks, `interval` seconds apart (+- jitter)."""

    tokens: int
    interval: float
    jitter: float = JITTER


@dataclass(frozen=True, slots=True)
class AnswerPlan:
    index: int
    chat_id: int
    private: bool
    tokens: tuple[str, ...]
    gaps: tuple[float, ...]  # seconds before each token; the first counts from the request


def make_tokens(rng: random.Random, count: int) -> list[str]:
    """Plain prose with sentences, commas, paragraphs and a few **bold** words (one chunk each,
    so no half-written `**` is ever on screen). No other Markdown: what the user sees is the
    text without whitespace and without `**`, character for character."""
    tokens: list[str] = []
    sentence_start = True
    since_break = 0
    for _ in range(count):
        word = rng.choice(_WORDS)
        if sentence_start:
            word = word.capitalize()
        sentence_start = False
        if rng.random() < 0.03:
            word = f"**{word}**"
        end = " "
        roll = rng.random()
        if roll < 0.08:
            word += "."
            sentence_start = True
            if since_break > 40 and rng.random() < 0.4:
                end, since_break = "\n\n", 0
        elif roll < 0.14:
            word += ","
        tokens.append(word + end)
        since_break += 1
    return tokens


def plan_answers(
    answers: int, mix: Mix, private: StreamShape, group: StreamShape, seed: int
) -> list[AnswerPlan]:
    """The same answers (text and timing) for the same arguments, run after run."""
    plans: list[AnswerPlan] = []
    for index in range(answers):
        is_private = mix == "private" or (mix == "mixed" and index % 2 == 0)
        shape = private if is_private else group
        rng = random.Random(f"{seed}:{index}")
        tokens = make_tokens(rng, shape.tokens)
        gaps = tuple(
            shape.interval * rng.uniform(1 - shape.jitter, 1 + shape.jitter) for _ in tokens
        )
        chat_id = index + 1 if is_private else GROUP_BASE - index
        plans.append(AnswerPlan(index, chat_id, is_private, tuple(tokens), gaps))
    return plans


def visible(text: str) -> str:
    """What the staleness metric compares: the text without any whitespace."""
    return "".join(text.split())


def produced_chars(token: str) -> str:
    """The characters a chunk adds to what the user reads (Markdown markers are not shown)."""
    return visible(token.replace("**", ""))


def page_ends(tokens: Iterable[str], limit: int = MESSAGE_LIMIT) -> tuple[int, ...]:
    """Where each full message of an answer ends, in visible characters, when the rendered text
    is cut at exactly `limit` characters: the most a message holds (the bot cuts earlier, at
    the end of a paragraph, line or word). The workload is ASCII: one UTF-16 unit each."""
    rendered = "".join(tokens).replace("**", "")
    return tuple(len(visible(rendered[:cut])) for cut in range(limit, len(rendered), limit))


# --- the metrics --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Staleness:
    total: float  # sum over the seen characters of (seen_at - produced_at), seconds
    chars: int  # characters the user saw
    unseen: int  # characters the agent wrote that never became visible
    first_seen: float | None  # when the first character became visible


def common_prefix(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    if a.startswith(b):
        return len(b)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # the longest equal prefix, by C-speed slice comparisons
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def seen_steps(snapshots: Iterable[tuple[float, str]], final: str) -> list[tuple[float, int]]:
    """(time, characters of `final` seen so far), each time more of it became visible.

    `snapshots` are (time, whitespace-free text on screen) in time order. A character once seen
    stays seen (a draft replaced by the message that persists it does not unsee it).
    """
    best = 0
    steps: list[tuple[float, int]] = []
    for at, text in snapshots:
        count = common_prefix(text, final)
        if count > best:
            best = count
            steps.append((at, count))
    return steps


def staleness(
    produced: Sequence[tuple[float, int]], seen: Sequence[tuple[float, int]]
) -> Staleness:
    """`produced`: (time, characters) per chunk in order; `seen`: `seen_steps` of the answer."""
    written = sum(n for _, n in produced)
    seen_chars = min(seen[-1][1], written) if seen else 0
    seen_sum = 0.0
    previous = 0
    for at, count in seen:
        count = min(count, seen_chars)
        seen_sum += (count - previous) * at
        previous = count
    produced_sum = 0.0
    left = seen_chars
    for at, n in produced:
        take = min(n, left)
        produced_sum += take * at
        left -= take
        if left == 0:
            break
    first = seen[0][0] if seen else None
    return Staleness(seen_sum - produced_sum, seen_chars, written - seen_chars, first)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class FirstText:
    """Bot-added latency to the first visible text, in seconds.

    `added_*`: a percentile of the bot's first-text delays (first chunk -> first text on screen)
    minus the same percentile of the ideal's. Under contention somebody has to wait, and which
    answer waits is a matter of order, not of the bot adding time, so the distributions are
    compared. `paired_*`: per answer, actual minus ideal (order differences included).
    """

    added_p50: float
    added_p99: float
    paired_p50: float
    paired_p99: float
    actual_p50: float
    actual_p99: float


def first_text(
    actual: Sequence[float | None],
    ideal: Sequence[float | None],
    first_chunk: Sequence[float | None],
) -> FirstText:
    """Per answer: when the bot showed text, when the ideal did, when the first chunk came."""
    actual_delay: list[float] = []
    ideal_delay: list[float] = []
    paired: list[float] = []
    for a, i, c in zip(actual, ideal, first_chunk, strict=True):
        if c is None:
            continue
        if a is not None:
            actual_delay.append(a - c)
        if i is not None:
            ideal_delay.append(i - c)
        if a is not None and i is not None:
            paired.append(a - i)
    return FirstText(
        added_p50=percentile(actual_delay, 50) - percentile(ideal_delay, 50),
        added_p99=percentile(actual_delay, 99) - percentile(ideal_delay, 99),
        paired_p50=percentile(paired, 50),
        paired_p99=percentile(paired, 99),
        actual_p50=percentile(actual_delay, 50),
        actual_p99=percentile(actual_delay, 99),
    )


# --- the ideal scheduler ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdealAnswer:
    private: bool
    arrivals: tuple[tuple[float, int], ...]  # (time, visible characters) per chunk, in order
    # Where each message but the last ends, in visible characters (`page_ends`): one call
    # shows text in one message only. Empty: the answer fits one message.
    pages: tuple[int, ...] = ()


@dataclass(slots=True)
class IdealResult:
    staleness: float  # seconds, summed over every character
    chars: int
    first_seen: list[float | None]  # per answer
    sends: list[tuple[float, int]]  # (time, answer index) of every call

    @property
    def average(self) -> float:
        return self.staleness / self.chars if self.chars else float("nan")


class _Unlimited:
    def free_at(self, now: float) -> float:
        return now

    def spend(self, now: float) -> None:
        return None


class _Window:
    """`RateLimit` exactly as the fake enforces it: calls in the last `window` seconds."""

    def __init__(self, limit: RateLimit) -> None:
        self.max_calls = limit.max_calls
        self.window = limit.window
        self.hits: deque[float] = deque()

    def free_at(self, now: float) -> float:
        hits = self.hits
        while hits and hits[0] <= now - self.window + EPS:
            hits.popleft()
        if len(hits) < self.max_calls:
            return now
        return hits[-self.max_calls] + self.window

    def spend(self, now: float) -> None:
        self.hits.append(now)


class _Bucket:
    """`Burst` exactly as the fake enforces it: a token bucket that starts full."""

    def __init__(self, limit: Burst) -> None:
        self.capacity = limit.capacity
        self.rate = limit.per_second
        self.tokens = limit.capacity
        self.updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now if self.updated is None else max(self.updated, now)

    def free_at(self, now: float) -> float:
        self._refill(now)
        if self.tokens >= 1.0 - EPS:
            return now
        return now + (1.0 - self.tokens) / self.rate

    def spend(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


_Limiter = _Unlimited | _Window | _Bucket


def _limiter(limit: RateLimit | Burst | None) -> _Limiter:
    if isinstance(limit, Burst):
        return _Bucket(limit)
    if isinstance(limit, RateLimit):
        return _Window(limit)
    return _Unlimited()


def pacing_interval(limit: RateLimit | Burst | None, span: float) -> float:
    """The even spacing of updates that a chat's limit sustains over an answer lasting `span`.

    For a steady stream, equally spaced updates minimise the summed staleness for a given number
    of calls (it is convex in the gaps), and this spacing gives the most calls the limit allows.
    Bucket (capacity C, rate r): k sends after the first drain k * (1 - r * s) <= C - 1 tokens,
    so s >= span / (C - 1 + r * span). Window (M per W): M per W on average, or all M within a
    short answer.
    """
    if limit is None or span <= 0:
        return 0.0
    if isinstance(limit, Burst):
        return span / (limit.capacity - 1 + limit.per_second * span)
    return min(limit.window / limit.max_calls, span / max(1, limit.max_calls - 1))


def at_bot_budget(limits: FloodLimits, window: BotWindow) -> FloodLimits:
    """The same limits with the bot-wide one replaced by the bot's own budget (its window is
    a little longer than Telegram's second), so that the gap to this reference is the
    scheduler's choices and overheads only."""
    return FloodLimits(
        private_chat=limits.private_chat,
        group_chat=limits.group_chat,
        bot_wide=RateLimit(window.calls, window.seconds),
        penalty_extension=limits.penalty_extension,
    )


_IDLE, _WAITING, _READY = 0, 1, 2


@dataclass(slots=True)
class _IdealChat:
    index: int
    limiter: _Limiter
    spacing: float
    first_arrival: float
    pages: tuple[int, ...] = ()
    unseen: int = 0
    unseen_time: float = 0.0  # sum of produced_at over the unseen characters
    pending: deque[list[float]] = field(default_factory=deque)  # unseen [time, count] chunks
    shown: int = 0  # visible characters on screen
    page: int = 0  # index into `pages` of the message being written
    sent: bool = False
    final: bool = False  # the last chunk has arrived
    last_send: float = float("-inf")
    state: int = _IDLE
    version: int = 0


def ideal_replay(answers: Sequence[IdealAnswer], limits: FloodLimits) -> IdealResult:
    """The best the bot could do with the same chunk arrival times under the same limits.

    A discrete-event replay with zero network and processing time, using the fake's exact
    limits (the per-chat bucket or rolling window and the bot-wide rolling window, with their
    full bursts). Each call shows all the text that has arrived, up to the end of the message
    it is in: a message holds 4,096 characters, so the rest of a longer answer takes another
    call (`IdealAnswer.pages`, cut at exactly 4,096 rendered characters, the most any cut can
    hold).
    A chat may be sent to when its own limit allows and, between its first and its last chunk,
    no sooner than `pacing_interval` after its previous call (an update sent early wastes a
    call the chat's limit will miss later: a group that spent 20 calls in its first seconds
    would be silent for a minute). The first text and the final text are never held back.
    Whenever the bot-wide window has room: first texts first (earliest first chunk first),
    then the ready chat whose unseen characters have accumulated the most staleness.
    """
    chats: list[_IdealChat] = []
    for index, answer in enumerate(answers):
        limit = limits.private_chat if answer.private else limits.group_chat
        arrivals = answer.arrivals
        span = arrivals[-1][0] - arrivals[0][0] if arrivals else 0.0
        first = arrivals[0][0] if arrivals else 0.0
        chats.append(
            _IdealChat(index, _limiter(limit), pacing_interval(limit, span), first, answer.pages)
        )
    events = list(
        heapq.merge(
            *(
                [(at, index, n, k == len(a.arrivals) - 1) for k, (at, n) in enumerate(a.arrivals)]
                for index, a in enumerate(answers)
            )
        )
    )
    bot: _Limiter = _limiter(limits.bot_wide)
    result = IdealResult(0.0, 0, [None] * len(answers), [])
    waiting: list[tuple[float, int, int]] = []  # (eligible at, chat, version)
    first_ready: list[tuple[float, int]] = []  # (first arrival, chat)
    update_ready: set[int] = set()

    def eligible(chat: _IdealChat, now: float) -> float:
        at = chat.limiter.free_at(now)
        if chat.sent and not chat.final:
            at = max(at, chat.last_send + chat.spacing)
        return at

    def make_ready(chat: _IdealChat) -> None:
        chat.state = _READY
        if chat.sent:
            update_ready.add(chat.index)
        else:
            heapq.heappush(first_ready, (chat.first_arrival, chat.index))

    def schedule(chat: _IdealChat, now: float) -> None:
        at = eligible(chat, now)
        if at <= now:
            make_ready(chat)
        else:
            chat.state = _WAITING
            heapq.heappush(waiting, (at, chat.index, chat.version))

    def pick(now: float) -> _IdealChat:
        if first_ready:
            return chats[heapq.heappop(first_ready)[1]]
        best = max(update_ready, key=lambda i: chats[i].unseen * now - chats[i].unseen_time)
        update_ready.remove(best)
        return chats[best]

    def send(chat: _IdealChat, now: float) -> None:
        room = chat.unseen
        if chat.page < len(chat.pages):
            room = min(room, chat.pages[chat.page] - chat.shown)
        shows = room
        while room > 0:
            chunk = chat.pending[0]
            take = min(room, int(chunk[1]))
            result.staleness += take * (now - chunk[0])
            chat.unseen_time -= take * chunk[0]
            chunk[1] -= take
            room -= take
            if chunk[1] == 0:
                chat.pending.popleft()
        result.chars += shows
        chat.unseen -= shows
        chat.shown += shows
        if chat.page < len(chat.pages) and chat.shown >= chat.pages[chat.page]:
            chat.page += 1
        if not chat.unseen:
            chat.unseen_time = 0.0  # no float residue
        if not chat.sent:
            result.first_seen[chat.index] = now
            chat.sent = True
        chat.last_send = now
        chat.limiter.spend(now)
        bot.spend(now)
        result.sends.append((now, chat.index))
        chat.state = _IDLE
        if chat.unseen:  # the rest is in the next message: another call
            schedule(chat, now)

    now = events[0][0] if events else 0.0
    position = 0
    while True:
        while position < len(events) and events[position][0] <= now:
            at, index, n, last = events[position]
            position += 1
            chat = chats[index]
            chat.unseen += n
            chat.unseen_time += n * at
            chat.pending.append([at, n])
            if last:
                chat.final = True
            if chat.state == _IDLE:
                schedule(chat, now)
            elif chat.state == _WAITING and last:
                chat.version += 1  # the final text is not paced: maybe sooner
                schedule(chat, now)
        while waiting and waiting[0][0] <= now:
            _, index, version = heapq.heappop(waiting)
            chat = chats[index]
            if chat.state == _WAITING and chat.version == version:
                make_ready(chat)
        while (first_ready or update_ready) and bot.free_at(now) <= now:
            send(pick(now), now)
        upcoming: list[float] = []
        if position < len(events):
            upcoming.append(events[position][0])
        if waiting:
            upcoming.append(waiting[0][0])
        if first_ready or update_ready:
            upcoming.append(bot.free_at(now))
        if not upcoming:
            return result
        now = max(now, min(upcoming))


# --- what the user saw, from the fake's records -----------------------------------------------

_SHOWING_METHODS: Final = frozenset({"sendmessagedraft", "deletemessage"})


def screen_snapshots(
    fake: FakeTelegram, chat_ids: Iterable[int]
) -> dict[int, list[tuple[float, str]]]:
    """Per chat, (time, whitespace-free text on screen) after every successful call.

    On screen: the bot's live messages in order, then the draft being streamed. Sending a
    message clears the chat's drafts (as Telegram does, and the fake).
    """
    wanted = set(chat_ids)
    events: dict[int, list[tuple[float, int, str, int, str]]] = {c: [] for c in wanted}
    seq = 0
    for request in fake.requests:
        if request.chat_id not in wanted or not request.ok:
            continue
        key = request.method.lower()
        if key not in _SHOWING_METHODS:
            continue
        seq += 1
        if key == "sendmessagedraft":
            draft_id = int(request.params.get("draft_id") or 0)
            text = visible(str(request.params.get("text") or ""))
            events[request.chat_id].append((request.time, seq, "draft", draft_id, text))
        else:
            message_id = int(request.params.get("message_id") or 0)
            events[request.chat_id].append((request.time, seq, "delete", message_id, ""))
    for chat_id in wanted:
        for message in fake.messages(chat_id, include_deleted=True):
            for version, state in enumerate(message.history):
                seq += 1
                kind = "send" if version == 0 else "edit"
                text = visible(state.text or "")
                events[chat_id].append((state.at, seq, kind, message.message_id, text))
    snapshots: dict[int, list[tuple[float, str]]] = {}
    for chat_id, chat_events in events.items():
        chat_events.sort(key=lambda e: (e[0], e[1]))
        messages: dict[int, str] = {}
        drafts: dict[int, str] = {}
        shots: list[tuple[float, str]] = []
        for at, _, kind, key_id, text in chat_events:
            if kind == "draft":
                drafts.pop(key_id, None)
                drafts[key_id] = text  # the newest draft last
            elif kind == "delete":
                messages.pop(key_id, None)
            else:
                messages[key_id] = text
                if kind == "send":
                    drafts.clear()
            shots.append(
                (at, "".join(messages[k] for k in sorted(messages)) + "".join(drafts.values()))
            )
        snapshots[chat_id] = shots
    return snapshots


def _has_stop_button(markup: Mapping[str, Any] | None) -> bool:
    rows = (markup or {}).get("inline_keyboard", [])
    return any(
        str(button.get("callback_data", "")).startswith("rg1st") for row in rows for button in row
    )


def answer_landed(fake: FakeTelegram, chat_id: int, final: str) -> bool:
    """The answer's final state is on screen: all its text in messages, no ⏹ left."""
    messages = fake.messages(chat_id)
    if not messages or _has_stop_button(messages[-1].reply_markup):
        return False
    return "".join(visible(m.visible_text) for m in messages).startswith(final)


# --- the fake agent ----------------------------------------------------------------------------


@dataclass(slots=True)
class _AgentRun:
    requested_at: float
    emitted: list[tuple[float, str]] = field(default_factory=list)
    done: bool = False
    closed_early: bool = False


class FakeAgent:
    """An OpenAI-compatible streaming endpoint that plays `AnswerPlan`s and times every chunk.

    The question names its plan (`q<index>`). Chunks are due at the request time plus the sum
    of the plan's gaps (so a busy harness does not compress the stream), and each chunk's time
    is taken just before it is written: the bot cannot show a character before its time.
    """

    def __init__(self, plans: Sequence[AnswerPlan]) -> None:
        self.plans = {plan.index: plan for plan in plans}
        self.runs: dict[int, _AgentRun] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        self._runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def chunks(self) -> int:
        return sum(len(run.emitted) for run in self.runs.values())

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        requested_at = time.monotonic()
        body = await request.json()
        question = str(body["messages"][-1]["content"])
        match = re.search(r"\bq(\d+)\b", question)
        if match is None or int(match.group(1)) not in self.plans:
            return web.json_response({"error": {"message": "unknown question"}}, status=400)
        plan = self.plans[int(match.group(1))]
        run = self.runs[plan.index] = _AgentRun(requested_at)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        ident = f"chatcmpl-bench{plan.index}"
        try:
            await response.write(_chunk(ident, {"role": "assistant", "content": ""}))
            loop = asyncio.get_running_loop()
            due = loop.time()
            for token, gap in zip(plan.tokens, plan.gaps, strict=True):
                due += gap
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                run.emitted.append((time.monotonic(), token))
                await response.write(_chunk(ident, {"content": token}))
            run.done = True
            await response.write(_chunk(ident, {}, finish_reason="stop"))
            usage = {"prompt_tokens": 5, "completion_tokens": len(plan.tokens)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            await response.write(
                _sse(
                    {"id": ident, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                )
            )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            run.closed_early = not run.done
            run.done = True
            raise
        return response


def _sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(ident: str, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
    return _sse(
        {
            "id": ident,
            "object": "chat.completion.chunk",
            "model": "bench",
            "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason}],
        }
    )


# --- the bot process ----------------------------------------------------------------------------


def _proc_stat_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class BotProcess:
    """`python -m bot run` as a child process."""

    def __init__(self, env: Mapping[str, str], workdir: Path, *, core: int | None) -> None:
        self._env = dict(env)
        self._workdir = workdir
        self._core = core
        self._process: asyncio.subprocess.Process | None = None
        self._log: TextIO | None = None
        self.pid = 0
        self.log_path = workdir / "bot.log"

    async def start(self) -> None:
        command = [sys.executable, "-m", "bot", "run"]
        self._log = self.log_path.open("w")
        self._process = await asyncio.create_subprocess_exec(
            *command, env=self._env, cwd=self._workdir, stdout=self._log, stderr=self._log
        )
        self.pid = self._process.pid
        if self._core is not None:
            os.sched_setaffinity(self.pid, {self._core})

    def cpu_seconds(self) -> float:
        return _proc_stat_cpu(self.pid)

    def peak_rss_mb(self) -> float:
        return _proc_status_kb(self.pid, "VmHWM") / 1024

    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)  # aiogram stops polling and shuts down cleanly
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Profiler:
    """`py-spy record` attached to the bot for the load only (collapsed stacks, `--format raw`:
    one line per stack with its sample count). Sampling is non-blocking, so the bot's timing is
    barely disturbed; the profiler runs on the harness's cores."""

    def __init__(self, pid: int, output: Path, seconds: float | None) -> None:
        self._pid = pid
        self._output = output
        self._seconds = seconds
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        command = [py_spy, "record", "--pid", str(self._pid), "--format", "raw", "--rate", "250"]
        command += ["--nonblocking", "-o", str(self._output)]
        if self._seconds is not None:
            command += ["--duration", str(max(1, round(self._seconds)))]
        self._process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None and self._seconds is None:
            process.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            await asyncio.wait_for(process.wait(), 30 + (self._seconds or 0))
        except TimeoutError:
            process.kill()
            await process.wait()


# --- one run ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunConfig:
    answers: int
    mix: Mix
    private: StreamShape
    group: StreamShape
    seed: int = 1
    redis_url: str | None = DEFAULT_REDIS_URL
    bot_core: int | None = None
    profile: Path | None = None
    profile_seconds: float | None = None  # None: the whole load
    bot_src: Path = REPO
    dump: Path | None = None  # JSON lines of every Bot API call and agent chunk of the run


@dataclass(slots=True)
class RunResult:
    answers: int
    mix: str
    tokens: str  # "private/group" tokens per answer @ interval
    n429: int
    penalty_calls: int  # calls made inside an open 429 window
    errors: int  # other non-2xx answers (400 not modified, ...)
    avg_staleness: float
    ideal_staleness: float
    ratio: float
    first_added_p50_ms: float  # percentile of actual delays minus percentile of ideal delays
    first_added_p99_ms: float
    first_paired_p50_ms: float  # per answer: actual minus ideal first-visible time
    first_paired_p99_ms: float
    first_visible_p50_ms: float  # actual: first chunk written -> first text visible
    first_visible_p99_ms: float
    budget_staleness: float  # the ideal at the bot's own bot-wide budget (30 per 1.005 s)
    one_message_ratio: float  # against an ideal whose messages hold any length (before 12-01)
    budget_ratio: float
    budget_first_added_p99_ms: float
    cpu_ms_per_chunk: float
    cpu_cores: float  # CPU seconds / wall seconds of the load
    cpu_peak_cores: float  # the busiest second
    peak_rss_mb: float
    wall_s: float
    chunks: int
    calls: int  # Bot API calls to chats (all methods but getUpdates and the like)
    ideal_calls: int
    landed: int  # answers whose final state arrived
    unseen_chars: int
    harness_lag_p99_ms: float
    harness_lag_max_ms: float
    agent_start_p99_ms: float  # user message pushed -> agent request, p99
    notes: list[str] = field(default_factory=list)


def _agents_toml(url: str) -> str:
    return (
        'default = "bench"\n\n[agents.bench]\nplatform = "openai"\ntitle = "Bench"\n'
        f'base_url = "{url}"\nmodel = "bench"\nmax_history_turns = 0\n'
    )


async def _flush_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def _bot_env(
    telegram_url: str, agents_file: Path, redis_url: str | None, bot_src: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "WEBHOOK_"))}
    for name in ("REDIS_URL", "OPERATORS", "REPLICA_ID", "STREAM_MODE", "LOG_LEVEL"):
        env.pop(name, None)
    env.update(
        BOT_TOKEN=BOT_TOKEN,
        TELEGRAM_API_URL=telegram_url,
        AGENTS_FILE=str(agents_file),
        STREAM_MODE="auto",
        LOG_LEVEL="INFO",
        PYTHONPATH=str(bot_src),
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


async def _cpu_monitor(bot: BotProcess, peaks: list[float], period: float = 1.0) -> None:
    """The bot's CPU use per `period` (cores): the average hides a saturated stretch."""
    before, at = bot.cpu_seconds(), time.monotonic()
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(OSError):
            now_cpu, now = bot.cpu_seconds(), time.monotonic()
            peaks.append((now_cpu - before) / (now - at))
            before, at = now_cpu, now


async def _lag_monitor(samples: list[tuple[float, float]], period: float = 0.05) -> None:
    """(when, how late) the harness's event loop woke up: its own stalls delay the fake's
    timestamps, which would be charged to the bot."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(period)
        samples.append((started, loop.time() - started - period))


def _expected_seconds(config: RunConfig, plans: Sequence[AnswerPlan]) -> float:
    longest = max(sum(plan.gaps) for plan in plans)
    return longest + 3 * len(plans) / 27 + 30


async def run_once(config: RunConfig, log: TextIO = sys.stderr) -> RunResult:
    plans = plan_answers(config.answers, config.mix, config.private, config.group, config.seed)
    if config.redis_url:
        await _flush_redis(config.redis_url)
    fake = FakeTelegram(
        username=BOT_USERNAME,
        token=BOT_TOKEN,
        bot_id=int(BOT_TOKEN.split(":")[0]),
        limits=FloodLimits.telegram(),
        poll_timeout_cap=2.0,
    )
    agent = FakeAgent(plans)
    lag: list[tuple[float, float]] = []
    monitor = asyncio.create_task(_lag_monitor(lag))
    with tempfile.TemporaryDirectory(prefix="relaygram-bench-") as tmp:
        workdir = Path(tmp)
        async with FakeTelegramServer(fake) as server:
            await agent.start()
            agents_file = workdir / "agents.toml"
            agents_file.write_text(_agents_toml(agent.url))
            bot = BotProcess(
                _bot_env(server.url, agents_file, config.redis_url, config.bot_src),
                workdir,
                core=config.bot_core,
            )
            profiler: Profiler | None = None
            try:
                await bot.start()
                await _wait_until(lambda: bool(fake.calls("getUpdates")) or not bot.running(), 60)
                if not bot.running():
                    raise RuntimeError(f"the bot did not start:\n{bot.log_tail()}")
                await asyncio.sleep(0.5)  # let start-up (setMyCommands...) settle
                # A full collection in this process stalls the fake for 100+ ms: the calls
                # queued meanwhile are then timestamped together and can look like a burst.
                gc.collect()
                gc.disable()
                lag.clear()
                started_requests = len(fake.requests)
                cpu_before = bot.cpu_seconds()
                cpu_samples: list[float] = []
                sampler = asyncio.create_task(_cpu_monitor(bot, cpu_samples))
                if config.profile is not None:
                    profiler = Profiler(bot.pid, config.profile, config.profile_seconds)
                    await profiler.start()
                    await asyncio.sleep(0.3)  # py-spy attaches
                    cpu_before = bot.cpu_seconds()
                pushed_at = time.monotonic()
                for plan in plans:
                    fake.push_update(_question(fake, plan))
                landed_at = await _wait_for_answers(fake, agent, plans, config, bot, log)
                sampler.cancel()
                wall = time.monotonic() - pushed_at
                cpu = bot.cpu_seconds() - cpu_before
                peak_rss = bot.peak_rss_mb()
            finally:
                gc.enable()
                if profiler is not None:
                    await profiler.stop()
                await bot.stop()
                await agent.close()
            log_text = bot.log_path.read_text(errors="replace")
            if config.dump is not None:
                shutil.copyfile(bot.log_path, config.dump.with_suffix(".log"))
        monitor.cancel()
    if config.dump is not None:
        _dump(config.dump, fake, agent, plans, pushed_at, lag)
    return _measure(
        config,
        plans,
        fake,
        agent,
        started_requests,
        pushed_at,
        landed_at,
        wall,
        cpu,
        max(cpu_samples, default=0.0),
        peak_rss,
        lag,
        log_text,
    )


def _dump(
    path: Path,
    fake: FakeTelegram,
    agent: FakeAgent,
    plans: Sequence[AnswerPlan],
    t0: float,
    lag: Sequence[tuple[float, float]],
) -> None:
    """Everything that happened, for looking into a result: times are seconds since the push."""
    chat_of = {plan.index: plan.chat_id for plan in plans}
    with path.open("w") as out:
        out.write(json.dumps({"t0_monotonic": t0}) + "\n")
        for r in fake.requests:
            text = r.params.get("text")
            record = {
                "t": round(r.time - t0, 4),
                "call": r.method,
                "chat": r.chat_id,
                "status": r.status,
                "chars": len(visible(str(text))) if text is not None else None,
            }
            out.write(json.dumps(record) + "\n")
        for index, run in agent.runs.items():
            chars = 0
            for at, token in run.emitted:
                chars += len(produced_chars(token))
                record = {"t": round(at - t0, 4), "chunk": chat_of[index], "total": chars}
                out.write(json.dumps(record) + "\n")
        for at, late in lag:
            if late > 0.01:
                out.write(json.dumps({"t": round(at - t0, 4), "harness_lag": round(late, 4)}))
                out.write("\n")


def _question(fake: FakeTelegram, plan: AnswerPlan) -> dict[str, Any]:
    text = f"q{plan.index}: tell me about streaming"
    if plan.private:
        return fake.user_text(plan.chat_id, text, chat_type="private")
    # One asker per group: the bot limits how often one person may ask.
    return fake.user_text(
        plan.chat_id,
        f"@{BOT_USERNAME} {text}",
        chat_type="supergroup",
        user_id=GROUP_USER_BASE + plan.index,
    )


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if predicate() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.05)


async def _wait_for_answers(
    fake: FakeTelegram,
    agent: FakeAgent,
    plans: Sequence[AnswerPlan],
    config: RunConfig,
    bot: BotProcess,
    log: TextIO,
) -> dict[int, float]:
    """Wait until every answer's final state landed (or nothing happens any more)."""
    deadline = time.monotonic() + 2 * _expected_seconds(config, plans) + 60
    pending = {plan.index: plan for plan in plans}
    finals: dict[int, str] = {}
    landed: dict[int, float] = {}
    last_count, last_change = 0, time.monotonic()
    next_report = time.monotonic() + 15
    while pending and time.monotonic() < deadline and bot.running():
        await asyncio.sleep(0.25)
        now = time.monotonic()
        for index, plan in list(pending.items()):
            run = agent.runs.get(index)
            if run is None or not run.done:
                continue
            if index not in finals:
                finals[index] = "".join(produced_chars(token) for _, token in run.emitted)
            if answer_landed(fake, plan.chat_id, finals[index]):
                landed[index] = now
                del pending[index]
        # Long polling goes on while the bot is idle: only calls to chats are activity.
        if any(r.method.lower() in _CHAT_CALLS for r in fake.requests[last_count:]):
            last_change = now
        last_count = len(fake.requests)
        if all(r.done for r in agent.runs.values()) and now - last_change > 30:
            break  # every stream ended and the bot has been silent for 30 s: it gave up
        if now >= next_report:
            next_report = now + 15
            print(
                f"  ... {len(landed)}/{len(plans)} answers landed, "
                f"{len(agent.runs)} streams started, {agent.chunks} chunks",
                file=log,
                flush=True,
            )
    return landed


_CHAT_CALLS: Final = frozenset(
    {
        "sendmessage",
        "editmessagetext",
        "editmessagereplymarkup",
        "deletemessage",
        "sendchataction",
        "sendmessagedraft",
    }
)


def _measure(
    config: RunConfig,
    plans: Sequence[AnswerPlan],
    fake: FakeTelegram,
    agent: FakeAgent,
    started_requests: int,
    pushed_at: float,
    landed_at: Mapping[int, float],
    wall: float,
    cpu: float,
    cpu_peak: float,
    peak_rss: float,
    lag: Sequence[tuple[float, float]],
    log_text: str,
) -> RunResult:
    load = fake.requests[started_requests:]
    n429 = sum(1 for r in load if r.status == 429)
    errors = sum(1 for r in load if r.status not in (200, 429))
    penalty_calls = sum(1 for r in load if r.during_penalty)
    calls = sum(1 for r in load if r.method.lower() in _CHAT_CALLS)
    snapshots = screen_snapshots(fake, [plan.chat_id for plan in plans])

    total, chars, unseen = 0.0, 0, 0
    ideal_answers: list[IdealAnswer] = []
    actual_first: list[float | None] = []
    first_chunk: list[float | None] = []
    for plan in plans:
        run = agent.runs.get(plan.index)
        emitted = run.emitted if run is not None else []
        produced = [(at, len(produced_chars(t))) for at, t in emitted if produced_chars(t)]
        final = "".join(produced_chars(token) for _, token in emitted)
        result = staleness(produced, seen_steps(snapshots.get(plan.chat_id, []), final))
        total += result.total
        chars += result.chars
        unseen += result.unseen
        pages = page_ends(token for _, token in emitted)
        ideal_answers.append(IdealAnswer(plan.private, tuple(produced), pages))
        actual_first.append(result.first_seen)
        first_chunk.append(produced[0][0] if produced else None)
    ideal = ideal_replay(ideal_answers, FloodLimits.telegram())
    budget = ideal_replay(ideal_answers, at_bot_budget(FloodLimits.telegram(), BOT_BUDGET))
    # Until 2026-12-01 the ideal showed a whole answer in one call, however long: kept for
    # comparison with earlier results (it differs only for answers longer than a message).
    one_message = ideal_replay(
        [replace(a, pages=()) for a in ideal_answers], FloodLimits.telegram()
    )
    first = first_text(actual_first, ideal.first_seen, first_chunk)
    first_budget = first_text(actual_first, budget.first_seen, first_chunk)
    agent_start = [run.requested_at - pushed_at for run in agent.runs.values()]
    average = total / chars if chars else float("nan")
    chunks = agent.chunks
    notes: list[str] = []
    if unseen:
        notes.append(f"{unseen} characters never shown")
    if len(landed_at) < len(plans):
        notes.append(f"{len(plans) - len(landed_at)} answers did not land")
    if len(agent.runs) < len(plans):
        notes.append(f"{len(plans) - len(agent.runs)} answers never reached the agent")
    closed = sum(1 for r in agent.runs.values() if r.closed_early)
    if closed:
        notes.append(f"{closed} agent streams closed early by the bot")
    warnings = [
        line
        for line in log_text.splitlines()
        if (" WARNING " in line or " ERROR " in line) and "Received SIGINT" not in line
    ]
    if warnings:
        notes.append(f"{len(warnings)} bot warnings/errors, first: {warnings[0][-160:]}")
    private_tokens = config.private.tokens if any(p.private for p in plans) else 0
    group_tokens = config.group.tokens if any(not p.private for p in plans) else 0
    shape = "/".join(str(n) for n in (private_tokens, group_tokens) if n)
    return RunResult(
        answers=config.answers,
        mix=config.mix,
        tokens=f"{shape}@{config.private.interval:g}s",
        n429=n429,
        penalty_calls=penalty_calls,
        errors=errors,
        avg_staleness=average,
        ideal_staleness=ideal.average,
        ratio=average / ideal.average if ideal.average else float("nan"),
        first_added_p50_ms=first.added_p50 * 1000,
        first_added_p99_ms=first.added_p99 * 1000,
        first_paired_p50_ms=first.paired_p50 * 1000,
        first_paired_p99_ms=first.paired_p99 * 1000,
        first_visible_p50_ms=first.actual_p50 * 1000,
        first_visible_p99_ms=first.actual_p99 * 1000,
        budget_staleness=budget.average,
        one_message_ratio=(average / one_message.average if one_message.average else float("nan")),
        budget_ratio=average / budget.average if budget.average else float("nan"),
        budget_first_added_p99_ms=first_budget.added_p99 * 1000,
        cpu_ms_per_chunk=cpu * 1000 / chunks if chunks else float("nan"),
        cpu_cores=cpu / wall if wall else float("nan"),
        cpu_peak_cores=cpu_peak,
        peak_rss_mb=peak_rss,
        wall_s=wall,
        chunks=chunks,
        calls=calls,
        ideal_calls=len(ideal.sends),
        landed=len(landed_at),
        unseen_chars=unseen,
        harness_lag_p99_ms=percentile([late for _, late in lag], 99) * 1000,
        harness_lag_max_ms=max((late for _, late in lag), default=0.0) * 1000,
        agent_start_p99_ms=percentile(agent_start, 99) * 1000,
        notes=notes,
    )


# --- reporting ----------------------------------------------------------------------------------

_HEADER: Final = (
    "| answers | mix | tokens | 429s | avg staleness s | ideal s | ratio "
    "| first text added p50/p99 ms | CPU ms/chunk | bot CPU cores avg/peak | peak RSS MB | wall s |"
)
_RULE: Final = "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
_DETAIL_HEADER: Final = (
    "| answers | mix | ideal @budget s | ratio @budget | ratio vs one-message ideal "
    "| first text added p99 @budget ms "
    "| first text paired p50/p99 ms | first text after 1st chunk p50/p99 ms "
    "| calls (ideal) | 400s | calls in 429 window | landed | chunks | message -> agent p99 ms "
    "| harness lag p99/max ms | notes |"
)
_DETAIL_RULE: Final = (
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def table_row(r: RunResult) -> str:
    return (
        f"| {r.answers} | {r.mix} | {r.tokens} | {r.n429} | {r.avg_staleness:.3f} "
        f"| {r.ideal_staleness:.3f} | {r.ratio:.2f} "
        f"| {r.first_added_p50_ms:.0f} / {r.first_added_p99_ms:.0f} "
        f"| {r.cpu_ms_per_chunk:.3f} | {r.cpu_cores:.2f} / {r.cpu_peak_cores:.2f} "
        f"| {r.peak_rss_mb:.0f} | {r.wall_s:.0f} |"
    )


def detail_row(r: RunResult) -> str:
    notes = "; ".join(n.replace("|", "/") for n in r.notes) or "-"
    return (
        f"| {r.answers} | {r.mix} | {r.budget_staleness:.3f} | {r.budget_ratio:.2f} "
        f"| {r.one_message_ratio:.2f} | {r.budget_first_added_p99_ms:.0f} "
        f"| {r.first_paired_p50_ms:.0f} / {r.first_paired_p99_ms:.0f} "
        f"| {r.first_visible_p50_ms:.0f} / {r.first_visible_p99_ms:.0f} "
        f"| {r.calls} ({r.ideal_calls}) | {r.errors} | {r.penalty_calls} "
        f"| {r.landed}/{r.answers} | {r.chunks} "
        f"| {r.agent_start_p99_ms:.0f} | {r.harness_lag_p99_ms:.0f} / {r.harness_lag_max_ms:.0f} "
        f"| {notes} |"
    )


def source_version(src: Path) -> str:
    """The commit the bot runs from: `git describe` of a checkout, or a COMMIT file in an export."""
    marker = src / "COMMIT"
    if marker.exists():
        commit = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{28}\b", r"\1", marker.read_text().strip())
        return f"{src} at {commit} (exported)"
    try:
        described = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(src)
    return f"{src} at {described}"


def machine_notes(redis_url: str | None, bot_core: int | None, bot_src: Path) -> list[str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiogram

    pinning = (
        f"bot pinned to core {bot_core}, harness to the others"
        if bot_core is not None
        else "no CPU pinning (fewer than 2 cores)"
    )
    return [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"nproc: {os.cpu_count()} ({model}); {pinning}",
        f"python: {platform.python_version()} ({platform.python_implementation()}), "
        f"aiogram {aiogram.__version__}, {platform.system()} {platform.release()}",
        f"storage: {'Redis ' + redis_url if redis_url else 'embedded in-memory store'}",
        f"bot source: {source_version(bot_src)}",
    ]


def _markers(label: str) -> tuple[str, str]:
    return f"<!-- bench:{label}:start -->", f"<!-- bench:{label}:end -->"


def results_block(
    label: str, command: str, notes: Sequence[str], results: Sequence[RunResult]
) -> str:
    start, end = _markers(label)
    lines = [
        start,
        "",
        f"Command: `{command}`",
        "",
        *(f"- {note}" for note in notes),
        "",
        _HEADER,
        _RULE,
        *(table_row(r) for r in results),
        "",
        _DETAIL_HEADER,
        _DETAIL_RULE,
        *(detail_row(r) for r in results),
        "",
        end,
    ]
    return "\n".join(lines)


def write_benchmarks(path: Path, label: str, block: str) -> None:
    """Replace the block between this label's markers in BENCHMARKS.md, or append it."""
    start, end = _markers(label)
    if path.exists():
        text = path.read_text()
        if start in text and end in text:
            head, rest = text.split(start, 1)
            tail = rest.split(end, 1)[1]
            path.write_text(head + block + tail)
            return
        path.write_text(text.rstrip("\n") + f"\n\n### {label}\n\n" + block + "\n")
        return
    path.write_text(f"# Benchmarks\n\n## Streaming\n\n### {label}\n\n{block}\n")


# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.streaming",
        description="Stream agent answers through the real bot into the fake Bot API (limits "
        "on) and print 429s, staleness vs an ideal scheduler, first-text latency, CPU and RSS.",
    )
    parser.add_argument("--answers", type=int, nargs="+", help="concurrent answers per run")
    parser.add_argument("--mix", choices=MIXES, nargs="+", help="chat kinds per run")
    parser.add_argument("--tokens", type=int, help="tokens per answer (default: per chat kind)")
    parser.add_argument("--group-tokens", type=int, help="tokens per group answer (--tokens)")
    parser.add_argument("--interval", type=float, help=f"seconds between tokens ({INTERVAL})")
    parser.add_argument("--jitter", type=float, default=JITTER, help="relative gap jitter")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="Redis db the bot uses, flushed before every run; 'none': the embedded store",
    )
    parser.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    parser.add_argument(
        "--label", default="streaming", help="which results block of BENCHMARKS.md to replace"
    )
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    parser.add_argument(
        "--profile", type=Path, help="a directory for py-spy profiles of the bot, one per run"
    )
    parser.add_argument(
        "--profile-seconds", type=float, help="profile only this long from the first message"
    )
    parser.add_argument("--dump", type=Path, help="a directory for JSON lines of every run")
    parser.add_argument(
        "--bot-src",
        type=Path,
        default=REPO,
        help="run the bot from this source tree (e.g. `git archive HEAD` unpacked somewhere)",
    )
    return parser


def _runs(args: argparse.Namespace) -> Iterator[tuple[int, Mix, StreamShape, StreamShape]]:
    interval = args.interval or INTERVAL
    if args.quick:
        private_tokens, group_tokens = QUICK_PRIVATE_TOKENS, QUICK_GROUP_TOKENS
        plan: list[tuple[int, Mix]] = [(1, "private"), (100, "mixed")]
        if args.answers or args.mix:
            plan = [(n, m) for n in args.answers or [1, 100] for m in args.mix or ["mixed"]]
    else:
        private_tokens, group_tokens = PRIVATE_TOKENS, GROUP_TOKENS
        plan = [
            (n, m) for m in args.mix or ["private", "group"] for n in args.answers or [1, 100, 1000]
        ]
    if args.tokens:
        private_tokens = group_tokens = args.tokens
    if args.group_tokens:
        group_tokens = args.group_tokens
    for answers, mix in plan:
        yield (
            answers,
            mix,
            StreamShape(private_tokens, interval, args.jitter),
            StreamShape(group_tokens, interval, args.jitter),
        )


async def _main(args: argparse.Namespace) -> int:
    redis_url: str | None = None if args.redis_url.lower() == "none" else args.redis_url
    if redis_url:
        try:
            await _flush_redis(redis_url)
        except Exception as exc:  # the benchmark still runs, on the embedded store
            print(f"Redis at {redis_url} unavailable ({exc}); using the embedded store")
            redis_url = None
    bot_core: int | None = None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        bot_core = cores[0]
        os.sched_setaffinity(0, set(cores[1:]))
    command = ".venv/bin/python -m tests.bench.streaming " + " ".join(sys.argv[1:])
    notes = machine_notes(redis_url, bot_core, args.bot_src)
    print("\n".join(notes))
    print(_HEADER)
    print(_RULE)
    results: list[RunResult] = []
    for number, (answers, mix, private, group) in enumerate(_runs(args)):
        profile = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = args.profile / f"{number:02d}-{answers}-{mix}.txt"
        dump = None
        if args.dump is not None:
            args.dump.mkdir(parents=True, exist_ok=True)
            dump = args.dump / f"{number:02d}-{answers}-{mix}.jsonl"
        config = RunConfig(
            answers=answers,
            mix=mix,
            private=private,
            group=group,
            seed=args.seed,
            redis_url=redis_url,
            bot_core=bot_core,
            profile=profile,
            profile_seconds=args.profile_seconds,
            bot_src=args.bot_src,
            dump=dump,
        )
        result = await run_once(config)
        results.append(result)
        print(table_row(result), flush=True)
    print()
    print(_DETAIL_HEADER)
    print(_DETAIL_RULE)
    for result in results:
        print(detail_row(result))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.write:
        block = results_block(args.label, command.strip(), notes, results)
        write_benchmarks(BENCHMARKS_FILE, args.label, block)
        print(f"\nwritten to {BENCHMARKS_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
