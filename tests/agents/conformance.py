"""What the adapters' conformance suites share: the stream contract, reading a failure, running
an adapter over a mock transport or a real HTTP server, and looking for leaked secrets.

Each suite (test_<platform>.py) builds its adapter's config and names its own shortcuts
(`dify(...)`, `timeweb(...)`); the checks here are the same for every platform, so that every
adapter is held to exactly the same contract.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import httpx
from aiohttp import web

from bot.agents.base import (
    AgentClient,
    AgentError,
    AgentEvent,
    AgentRequest,
    AnswerAccumulator,
    Failed,
    Finished,
    ReasoningDelta,
    Started,
    SupportsStop,
    TextDelta,
)
from tests.fakes.dify import FakeDify
from tests.fakes.dify_server import make_app
from tests.transcripts import Answer, Recorder

__all__ = [
    "USER",
    "answer_of",
    "assert_redacted",
    "check_contract",
    "check_ending",
    "close_after_first_text",
    "collect",
    "connected",
    "failure",
    "logged_texts",
    "only_failure",
    "recorded",
    "served",
    "stop_after_three_texts",
]

# Who asks, unless a test says otherwise.
USER = "tg-user-42"

ClientT = TypeVar("ClientT")
ConfigT = TypeVar("ConfigT")


# --- the stream contract -------------------------------------------------------------------------


def check_ending(events: Sequence[AgentEvent]) -> tuple[Finished | Failed, list[int]]:
    """Exactly one Finished or Failed, and it is last; at most one Started.

    Returns that last event and where Started is (at most one position), for the checks that
    differ between platforms.
    """
    terminal = [e for e in events if isinstance(e, Finished | Failed)]
    assert len(terminal) == 1, events
    assert events[-1] is terminal[0], "Finished/Failed must be the last event"
    started = [i for i, e in enumerate(events) if isinstance(e, Started)]
    assert len(started) <= 1
    return terminal[0], started


def check_contract(events: Sequence[AgentEvent]) -> AnswerAccumulator:
    """The stream contract of bot/agents/base.py, then the events folded into an answer."""
    _, started = check_ending(events)
    texts = [i for i, e in enumerate(events) if isinstance(e, TextDelta | ReasoningDelta)]
    if texts:
        assert started, "Started must come before the first text"
        assert started[0] < texts[0], "Started must come before the first text"
    assert all(e.text for e in events if isinstance(e, TextDelta | ReasoningDelta))
    return answer_of(events)


def answer_of(events: Sequence[AgentEvent]) -> AnswerAccumulator:
    answer = AnswerAccumulator()
    for event in events:
        answer.apply(event)
    return answer


def failure(events: Sequence[AgentEvent]) -> AgentError:
    """The error of a stream that failed (its last event is Failed)."""
    last = events[-1]
    assert isinstance(last, Failed), events
    return last.error


def only_failure(events: Sequence[AgentEvent]) -> AgentError:
    """The error of a stream that failed before anything else happened (Failed is all of it)."""
    assert [type(e) for e in events] == [Failed]
    return failure(events)


# --- running an adapter --------------------------------------------------------------------------


async def collect(
    client: AgentClient, request: AgentRequest | None = None, *, user: str = USER
) -> list[AgentEvent]:
    """Every event of one answer: to `request`, or to "hi" from `user`."""
    return [event async for event in client.stream(request or AgentRequest("hi", user))]


@asynccontextmanager
async def connected(
    adapter: Callable[[ConfigT, httpx.AsyncClient], ClientT],
    config: ConfigT,
    transport: httpx.AsyncBaseTransport,
) -> AsyncIterator[ClientT]:
    """The adapter for `config`, its requests going to `transport` (e.g. a fake's)."""
    async with httpx.AsyncClient(transport=transport) as http:
        yield adapter(config, http)


@asynccontextmanager
async def recorded(
    adapter: Callable[[ConfigT, httpx.AsyncClient], ClientT], config: ConfigT, *answers: Answer
) -> AsyncIterator[tuple[ClientT, Recorder]]:
    """The adapter for `config`, answered by `answers` in order; the Recorder keeps its requests."""
    recorder = Recorder(*answers)
    async with connected(adapter, config, recorder.transport()) as client:
        yield client, recorder


@asynccontextmanager
async def served(fake: FakeDify) -> AsyncIterator[str]:
    """`fake` served over real HTTP by aiohttp; yields its Service API base URL (`.../v1`)."""
    runner = web.AppRunner(make_app(fake))
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def close_after_first_text(client: AgentClient) -> None:
    """Read an answer up to its first text, then close it (as the bot does to stop reading)."""
    events = client.stream(AgentRequest("hi", USER))
    assert isinstance(await anext(events), Started)
    assert isinstance(await anext(events), TextDelta)
    await events.aclose()


class _StoppableClient(AgentClient, SupportsStop, Protocol):
    pass


async def stop_after_three_texts(
    client: _StoppableClient, request: AgentRequest, stopper: str
) -> list[AgentEvent]:
    """The events of an answer that `stopper` stops through the platform's stop call once three
    text deltas arrived; the stream is read on to its end."""
    events: list[AgentEvent] = []
    async for event in client.stream(request):
        events.append(event)
        if sum(isinstance(e, TextDelta) for e in events) == 3:
            started = events[0]
            assert isinstance(started, Started)
            assert started.task_id
            await client.stop(started.task_id, stopper)
    return events


# --- secrets -------------------------------------------------------------------------------------


def logged_texts(error: Exception, records: Sequence[logging.LogRecord]) -> list[str]:
    """Everywhere a secret could leak to: the error's texts, the log lines and their arguments."""
    texts = [str(error), repr(error), getattr(error, "detail", "")]
    texts += [r.getMessage() for r in records]
    return texts + [str(r.args) for r in records]


def assert_redacted(texts: Sequence[str], *secrets: str) -> None:
    """No secret in any of `texts`, and the redaction mark in at least one of them: what quoted
    the secrets did reach the errors or the logs, but redacted."""
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert any("***" in t for t in texts)
