"""The silence timeout on a streaming body (`bot/agents/http.py`), through a real
`httpx.AsyncClient` over `httpx.MockTransport`: it counts only the time spent waiting for the
agent, each wait on its own, and never turns a cancellation from elsewhere into a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

from bot.agents.base import AgentStreamCut, AgentTimeout
from bot.agents.http import open_stream
from tests.transcripts import ChunkStream

SILENCE = 0.2


async def read_all(stream: ChunkStream, *, per_chunk: float = 0.0) -> list[bytes]:
    """The body as the caller sees it; `per_chunk`: how long the caller works on each piece."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream)

    timeouts = httpx.Timeout(connect=1.0, read=SILENCE, write=SILENCE, pool=1.0)
    received: list[bytes] = []
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http,
        open_stream(http, "POST", "http://agent.test/chat", timeouts=timeouts) as response,
    ):
        async for piece in response.aiter_raw():
            received.append(piece)
            if per_chunk:
                await asyncio.sleep(per_chunk)
    return received


def pieces(count: int) -> Sequence[bytes]:
    return [f"data: {i}\n\n".encode() for i in range(count)]


async def test_a_long_stream_of_short_gaps_is_not_silence() -> None:
    # 8 gaps of 0.12 s: each well inside the limit, together almost five times it.
    stream = ChunkStream(pieces(8), delay=0.6 * SILENCE)
    assert await read_all(stream) == list(pieces(8))


async def test_time_the_caller_spends_between_reads_is_not_silence() -> None:
    # The agent is quick; the caller takes 1.5 x the limit over every piece.
    stream = ChunkStream(pieces(3))
    assert await read_all(stream, per_chunk=1.5 * SILENCE) == list(pieces(3))


async def test_one_long_gap_after_many_quick_ones_times_out() -> None:
    stream = ChunkStream(pieces(6), delays=[0, 0.05, 0.05, 0.05, 0.05, 3.0])
    received: list[bytes] = []
    with pytest.raises(AgentTimeout):
        received = await asyncio.wait_for(read_all(stream), timeout=2.0)
    assert received == []  # raised, not returned
    assert stream.sent == 5
    assert stream.closed


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    stream = ChunkStream(pieces(2), delays=[0, 3.0])
    reader = asyncio.create_task(read_all(stream))
    await asyncio.sleep(SILENCE / 2)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert reader.cancelled()


async def test_the_timeout_leaves_the_task_uncancelled() -> None:
    # Like asyncio.timeout: after the timeout is raised, the task goes on normally and may
    # await again (the chat service still finishes the answer after an AgentTimeout).
    stream = ChunkStream(pieces(2), delays=[0, 3.0])
    with pytest.raises(AgentTimeout):
        await read_all(stream)
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
    await asyncio.sleep(0.01)


async def test_a_cut_after_headers_is_still_a_cut_stream() -> None:
    stream = ChunkStream(pieces(2), error=httpx.RemoteProtocolError("peer closed"))
    with pytest.raises(AgentStreamCut):
        await read_all(stream)
