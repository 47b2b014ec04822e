"""Streaming requests (`bot/agents/http.py`).

- The silence timeout on a body, through a real `httpx.AsyncClient` over `httpx.MockTransport`:
  it counts only the time spent waiting for the agent, each wait on its own, and never turns a
  cancellation from elsewhere into a timeout.
- The client the bot really uses (`bot.app.agent_http_client`, httpx over aiohttp) against a
  local aiohttp server: many streams at once, and each way a connection fails.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.agents.base import AgentStreamCut, AgentTimeout, AgentUnavailable
from bot.agents.http import iter_sse, open_stream, read_body
from bot.app import agent_http_client
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


# --- the bot's own client over real HTTP ---------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TIMEOUTS = httpx.Timeout(connect=2.0, read=SILENCE, write=SILENCE, pool=2.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def agent_server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/stream"
    finally:
        await runner.cleanup()


async def open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def events_of(
    http: httpx.AsyncClient, url: str, timeouts: httpx.Timeout = TIMEOUTS
) -> list[str]:
    async with open_stream(http, "POST", url, timeouts=timeouts, json={}) as response:
        return [event.data async for event in iter_sse(response)]


async def test_more_streams_at_once_than_aiohttps_default_pool() -> None:
    # Every answer holds its stream open; aiohttp's default pool would hold 100.
    streams = 150
    patient = httpx.Timeout(10.0)
    arrived = 0
    everyone = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        response = await open_sse(request)
        arrived += 1
        if arrived == streams:
            everyone.set()
        await response.write(b"data: first\n\n")
        await everyone.wait()  # no stream ends before all of them are open
        await response.write(b"data: last\n\n")
        return response

    async with agent_server(handler) as url, agent_http_client() as http:
        results = await asyncio.wait_for(
            asyncio.gather(*(events_of(http, url, patient) for _ in range(streams))), timeout=20
        )
    assert results == [["first", "last"]] * streams


async def test_events_split_anywhere_arrive_whole() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_sse(request)
        for piece in (b"da", b'ta: {"text": "\xd0', b'\x9f\xd1\x80\xd0\xb8"}\n', b"\ndata: 2\n\n"):
            await response.write(piece)
            await asyncio.sleep(0.01)
        return response

    async with agent_server(handler) as url, agent_http_client() as http:
        assert await events_of(http, url) == ['{"text": "При"}', "2"]


async def test_events_far_larger_than_the_read_buffer_arrive_whole() -> None:
    # The client reads a connection 8 KiB at a time (`READ_BUFFER`) so that lagging streams
    # wait in the kernel; an event of 100 KB and 2 MB written at once must still arrive whole.
    big = "x" * 100_000
    many = [f"event {n} " + "y" * 200 for n in range(10_000)]

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_sse(request)
        body = f"data: {big}\n\n" + "".join(f"data: {m}\n\n" for m in many)
        await response.write(body.encode())
        return response

    async with agent_server(handler) as url, agent_http_client() as http:
        assert await events_of(http, url) == [big, *many]


async def test_nobody_listening_is_unavailable() -> None:
    async with agent_http_client() as http:
        with pytest.raises(AgentUnavailable):
            await events_of(http, f"http://127.0.0.1:{free_port()}/stream")


async def test_a_connection_dropped_mid_stream_is_a_cut() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_sse(request)
        await response.write(b"data: partial\n\n")
        assert request.transport is not None
        request.transport.abort()  # no terminating chunk: the body is incomplete
        return response

    async with agent_server(handler) as url, agent_http_client() as http:
        with pytest.raises(AgentStreamCut):
            await events_of(http, url)


async def test_silence_after_the_headers_times_out() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_sse(request)
        await response.write(b"data: one\n\n")
        await asyncio.sleep(5 * SILENCE)
        return response

    async with agent_server(handler) as url, agent_http_client() as http:
        with pytest.raises(AgentTimeout):
            await asyncio.wait_for(events_of(http, url), timeout=3)


async def test_a_compressed_body_arrives_decoded() -> None:
    document = b'{"answer": "' + b"x" * 5000 + b'"}'

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(document),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async with (
        agent_server(handler) as url,
        agent_http_client() as http,
        open_stream(http, "POST", url, timeouts=TIMEOUTS, json={}) as response,
    ):
        assert await read_body(response, limit=10_000) == document


async def test_a_stream_closed_early_leaves_nothing_for_the_next_request() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_sse(request)
        text = (await request.json())["say"]
        await response.write(f"data: {text}\n\n".encode())
        if text == "first":
            await response.write(b"data: unread\n\n")
            await asyncio.sleep(2 * SILENCE)
            await response.write(b"data: more unread\n\n")
        return response

    async with agent_server(handler) as url, agent_http_client() as http:
        # Stop reading after the first event, as /stop does.
        first = {"say": "first"}
        async with open_stream(http, "POST", url, timeouts=TIMEOUTS, json=first) as response:
            events = aiter(iter_sse(response))
            assert (await anext(events)).data == "first"
        after = {"say": "next"}
        async with open_stream(http, "POST", url, timeouts=TIMEOUTS, json=after) as response:
            assert [event.data async for event in iter_sse(response)] == ["next"]


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no authority signed, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_sse(request)
        await response.write(b"data: secure\n\n")
        return response

    app = web.Application()
    app.router.add_post("/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{port}/stream"
    finally:
        await runner.cleanup()


async def test_https_checks_the_agents_certificate(self_signed: tuple[Path, Path]) -> None:
    async with tls_server(*self_signed) as url, agent_http_client() as http:
        with pytest.raises(AgentUnavailable, match="ertificate"):
            await events_of(http, url)


async def test_https_trusts_an_authority_named_in_ssl_cert_file(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed[0]))
    async with tls_server(*self_signed) as url, agent_http_client() as http:
        assert await events_of(http, url) == ["secure"]
