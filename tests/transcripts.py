"""Load the recorded and hand-written protocol transcripts and replay them through httpx.

The transcripts are a verbatim copy of the project's `shared/protocols/transcripts` in
`tests/data/transcripts`, so the suite runs from any checkout (override the location with the
environment variable `RELAYGRAM_TRANSCRIPTS`, e.g. to test against a newer recording):
- `dify-0.15.3-live/NN_name.request.http` / `.response.raw`: real traffic, the raw HTTP/1.1
  bytes. A chunked response keeps each HTTP chunk as one piece, in order, so a replay delivers
  the body exactly as the server flushed it.
- `*.txt`: hand-written response bodies; `*.json`: single JSON values or catalogues.

`replay()` builds an `httpx.Response` whose body is an async byte stream of those pieces,
optionally re-split at fixed byte offsets to prove that events and UTF-8 sequences split
across reads are reassembled. `Recorder` is an `httpx.MockTransport` handler that answers
with queued responses and keeps every request it received.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

LIVE_DIR = "dify-0.15.3-live"
# Hop-by-hop framing that the replay does itself; the recorded values would be wrong for it.
_FRAMING_HEADERS = frozenset({"transfer-encoding", "content-length", "connection"})


def transcripts_dir() -> Path:
    override = os.environ.get("RELAYGRAM_TRANSCRIPTS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "data" / "transcripts"


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    target: str  # path and query, as on the request line
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    chunks: tuple[bytes, ...]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    def replay(self, *, split_every: int | None = None, delay: float = 0.0) -> httpx.Response:
        """A fresh httpx.Response streaming this body (a response can be read only once)."""
        headers = [(k, v) for k, v in self.headers if k.lower() not in _FRAMING_HEADERS]
        chunks = resplit(self.chunks, split_every) if split_every else self.chunks
        return stream_response(chunks, status=self.status, headers=headers, delay=delay)


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    request: RecordedRequest
    response: RecordedResponse


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers if k.lower() == wanted), None)


def _split_head(data: bytes) -> tuple[str, tuple[tuple[str, str], ...], bytes]:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("no end of the HTTP head (CR LF CR LF)")
    start_line, *lines = head.decode("latin-1").split("\r\n")
    headers = tuple(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in lines if line)
    )
    return start_line, headers, rest


def parse_request(data: bytes) -> RecordedRequest:
    start_line, headers, body = _split_head(data)
    method, target, _version = start_line.split(" ", 2)
    return RecordedRequest(method, target, headers, body)


def parse_response(data: bytes) -> RecordedResponse:
    start_line, headers, rest = _split_head(data)
    _version, status, reason = [*start_line.split(" ", 2), ""][:3]
    if (_header(headers, "transfer-encoding") or "").lower() == "chunked":
        chunks = _dechunk(rest)
    else:
        length = _header(headers, "content-length")
        body = rest[: int(length)] if length is not None else rest
        chunks = (body,) if body else ()
    return RecordedResponse(int(status), reason, headers, chunks)


def _dechunk(data: bytes) -> tuple[bytes, ...]:
    """The pieces of a chunked body (RFC 9112 §7.1); trailers are ignored."""
    chunks: list[bytes] = []
    position = 0
    while True:
        line_end = data.index(b"\r\n", position)
        size = int(data[position:line_end].split(b";", 1)[0], 16)
        position = line_end + 2
        if size == 0:
            return tuple(chunks)
        chunks.append(data[position : position + size])
        position += size
        if data[position : position + 2] != b"\r\n":
            raise ValueError(f"chunk not followed by CR LF at byte {position}")
        position += 2


# --- loading -------------------------------------------------------------------------------------


@cache
def live_names() -> tuple[str, ...]:
    """Every recorded exchange, e.g. `04_chat_stream_new_conversation`."""
    folder = transcripts_dir() / LIVE_DIR
    return tuple(
        sorted(p.name.removesuffix(".request.http") for p in folder.glob("*.request.http"))
    )


def live(key: str) -> Exchange:
    """A recorded exchange by number (`"04"`) or full name."""
    matches = [n for n in live_names() if n == key or n.startswith(f"{key}_")]
    if len(matches) != 1:
        raise LookupError(f"no single live transcript for {key!r}: {matches}")
    name = matches[0]
    folder = transcripts_dir() / LIVE_DIR
    return Exchange(
        name,
        parse_request((folder / f"{name}.request.http").read_bytes()),
        parse_response((folder / f"{name}.response.raw").read_bytes()),
    )


def body(name: str) -> bytes:
    """A hand-written response body such as `dify-chat-stream.txt`, byte for byte."""
    return (transcripts_dir() / name).read_bytes()


def catalogue(name: str) -> Any:
    """A JSON transcript such as `dify-http-errors.json`."""
    return json.loads(body(name))


def sse_response(
    data: bytes, *, split_every: int | None = None, delay: float = 0.0, status: int = 200
) -> httpx.Response:
    """A hand-written SSE body served as Dify serves it (whole, or re-split every N bytes)."""
    chunks = resplit([data], split_every) if split_every else [data]
    headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("X-Version", "0.15.3")]
    return stream_response(chunks, status=status, headers=headers, delay=delay)


# --- streaming responses -------------------------------------------------------------------------


def resplit(chunks: Iterable[bytes], every: int | None) -> list[bytes]:
    """The same bytes in pieces of `every` bytes, ignoring the original boundaries."""
    data = b"".join(chunks)
    if not every:
        return [data]
    return [data[i : i + every] for i in range(0, len(data), every)]


class ChunkStream(httpx.AsyncByteStream):
    """Yields byte pieces, optionally sleeping before each; can end by raising an exception."""

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        delay: float = 0.0,
        delays: Sequence[float] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.chunks = list(chunks)
        self.delays = list(delays) if delays is not None else [delay] * len(self.chunks)
        self.error = error
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk, pause in zip(self.chunks, self.delays, strict=False):
            if pause:
                await asyncio.sleep(pause)
            self.sent += 1
            yield chunk
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def stream_response(
    chunks: Sequence[bytes],
    *,
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (("Content-Type", "text/event-stream"),),
    delay: float = 0.0,
    delays: Sequence[float] | None = None,
    error: Exception | None = None,
) -> httpx.Response:
    stream = ChunkStream(chunks, delay=delay, delays=delays, error=error)
    return httpx.Response(status, headers=list(headers), stream=stream)


def json_response(
    status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()
) -> httpx.Response:
    return httpx.Response(status, json=payload, headers=list(headers))


# --- a recording MockTransport handler -----------------------------------------------------------

Responder = Callable[[httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]
Answer = httpx.Response | Exception | Responder


class Recorder:
    """An `httpx.MockTransport` handler: answers with queued responses, records every request.

    Each queued answer is a response (used once), an exception to raise (e.g.
    `httpx.ConnectError`), or a callable taking the request. When the queue is empty, the last
    answer is reused if it is a callable; otherwise the request fails the test loudly.
    """

    def __init__(self, *answers: Answer) -> None:
        self._answers: list[Answer] = list(answers)
        self.requests: list[httpx.Request] = []

    def add(self, *answers: Answer) -> None:
        self._answers.extend(answers)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self._answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self._answers[0]
        if len(self._answers) > 1 or not callable(answer) or isinstance(answer, Exception):
            self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        result = answer(request)
        return result if isinstance(result, httpx.Response) else await result

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)
