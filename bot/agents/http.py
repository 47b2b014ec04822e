"""Plumbing shared by every HTTP adapter: timeouts, headers, streaming requests, SSE, error bodies.

Adapters get an `httpx.AsyncClient` from the app factory and never create one. This module turns
httpx's transport failures into the `AgentError` hierarchy, so each adapter only maps what its
platform *says* (status codes, error bodies, error events), not what the network does.

Timeouts: the read timeout is the agent's *silence* timeout. It also covers the wait for the
response headers, because Dify sends its headers only together with the first event (10 s and
more with a slow model), so a short "time to headers" limit would fail healthy requests.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError
from pydantic import SecretStr

from bot.agents.base import (
    AgentAuthError,
    AgentBadRequest,
    AgentError,
    AgentNotFound,
    AgentProtocolError,
    AgentQuotaExceeded,
    AgentRateLimited,
    AgentStreamCut,
    AgentTimeout,
    AgentUnavailable,
)

# How much of an error body is read: enough for any JSON error, bounded against HTML error pages
# or a misbehaving server streaming forever with a 4xx status.
ERROR_BODY_LIMIT = 64 * 1024
# Non-streaming success bodies (suggestions, app info) are small; this only guards memory.
REPLY_BODY_LIMIT = 1024 * 1024
# How much of an unreadable payload goes into a log line or an error detail.
EXCERPT_CHARS = 200

__all__ = [
    "ERROR_BODY_LIMIT",
    "EXCERPT_CHARS",
    "REPLY_BODY_LIMIT",
    "Reply",
    "TimeoutSettings",
    "error_for_status",
    "excerpt",
    "fetch",
    "is_event_stream",
    "iter_sse",
    "make_timeout",
    "merge_headers",
    "open_stream",
    "parse_json",
    "parse_retry_after",
    "read_body",
    "redact",
    "transport_error",
]


class TimeoutSettings(Protocol):
    """The two timeout fields every agent config has (properties: the configs are frozen)."""

    @property
    def connect_timeout(self) -> float: ...

    @property
    def silence_timeout(self) -> float: ...


def make_timeout(config: TimeoutSettings) -> httpx.Timeout:
    """httpx timeouts for one agent: `read` is the silence timeout (see the module docstring)."""
    return httpx.Timeout(
        connect=config.connect_timeout,
        read=config.silence_timeout,
        # A request body that the server does not accept for this long is silence too.
        write=config.silence_timeout,
        # Waiting for a free pooled connection is bounded like connecting.
        pool=config.connect_timeout,
    )


def merge_headers(
    own: Mapping[str, str], extra: Mapping[str, SecretStr] | None = None
) -> dict[str, str]:
    """The adapter's headers plus the configured extra headers.

    Configured headers are applied last (case-insensitively), so an operator can override
    anything the adapter sets, e.g. the `Authorization` a gateway in front of the agent expects.
    """
    merged = httpx.Headers(dict(own))
    for name, value in (extra or {}).items():
        merged[name] = value.get_secret_value()
    return dict(merged.items())


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in `text` (longest first, so no fragment of one survives)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def excerpt(data: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """The first `limit` characters of a payload, for a log line or an error detail."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return text if len(text) <= limit else text[:limit] + "…"


# --- transport failures --------------------------------------------------------------------------


def transport_error(
    exc: httpx.HTTPError | httpx.InvalidURL, *, started: bool, secrets: Iterable[str] = ()
) -> AgentError:
    """Map an httpx failure to an AgentError.

    `started` means the response headers had arrived: a connection that breaks after that is a
    cut stream (the caller keeps the partial answer), before it the agent is unavailable.
    The detail names the exception and the host only: never the URL (it may carry user info)
    and never request headers.
    """
    host = _host_of(exc)
    where = f" ({host})" if host else ""
    detail = redact(f"{type(exc).__name__}{where}: {exc}".rstrip(": "), secrets)
    if isinstance(exc, httpx.ConnectTimeout):
        # Connecting is not "silence" of an agent that accepted the request: nobody answered.
        return AgentUnavailable(detail)
    if isinstance(exc, httpx.TimeoutException):
        return AgentTimeout(detail)
    if isinstance(exc, httpx.DecodingError):
        return AgentProtocolError(detail)
    if isinstance(exc, httpx.TransportError) and started:
        # RemoteProtocolError (peer closed mid-body, bad chunk framing), ReadError (reset), ...
        return AgentStreamCut(detail)
    return AgentUnavailable(detail)


def _host_of(exc: httpx.HTTPError | httpx.InvalidURL) -> str | None:
    if isinstance(exc, httpx.InvalidURL):
        return None
    try:
        return exc.request.url.host or None
    except RuntimeError:  # the exception was raised without a request attached
        return None


class _SilenceGuard(httpx.AsyncByteStream):
    """Enforces the silence timeout on the body, whatever the transport.

    httpx applies its read timeout only inside real network transports; this guard gives the
    same limit for any transport (mock, ASGI, proxies), and the tests rely on it. It raises
    httpx.ReadTimeout, so both paths are mapped the same way.
    """

    def __init__(self, inner: httpx.AsyncByteStream, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._inner)
        while True:
            try:
                async with asyncio.timeout(self._seconds):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise httpx.ReadTimeout(f"no data for {self._seconds:g} s") from None
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeouts: httpx.Timeout,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> AsyncIterator[httpx.Response]:
    """Send a request and yield the response with its body unread (any status).

    Transport failures, while connecting or while the caller reads the body inside the block,
    come out as AgentError subclasses (see `transport_error`). AgentErrors the caller raises
    inside the block pass through unchanged. Leaving the block closes the connection.
    """
    started = False
    try:
        async with http.stream(
            method, url, headers=headers, json=json, params=params, timeout=timeouts
        ) as response:
            started = True
            if timeouts.read is not None and isinstance(response.stream, httpx.AsyncByteStream):
                response.stream = _SilenceGuard(response.stream, timeouts.read)
            yield response
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise transport_error(exc, started=started, secrets=secrets) from exc


# --- reading bodies ------------------------------------------------------------------------------


def is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


async def iter_sse(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The response's server-sent events, decoded by httpx-sse.

    httpx-sse splits lines only on CR LF, CR and LF (not on U+2028/U+2029 like
    `str.splitlines`), so Dify 1.x's raw-UTF-8 orjson payloads survive, and UTF-8 sequences
    split across reads are reassembled by its incremental decoder. An event still unterminated
    at EOF is dropped, as the SSE standard says: that is how a cut stream looks.
    """
    source = EventSource(response)
    try:
        async with aclosing(source.aiter_sse()) as events:
            async for event in events:
                yield event
    except SSEError as exc:  # not an event stream at all (wrong Content-Type)
        raise AgentProtocolError(str(exc), status=response.status_code) from None


async def read_body(response: httpx.Response, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """Up to `limit` bytes of the (decompressed) body; the rest is not read."""
    parts: list[bytes] = []
    size = 0
    chunks = response.aiter_bytes()
    try:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    finally:
        # aiter_bytes is typed as an AsyncIterator, but it is a generator: close it now.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return b"".join(parts)[:limit]


def parse_json(body: bytes | str) -> Any | None:
    """The JSON value of a body, or None when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), if any."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_for_status(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
) -> AgentError:
    """The generic meaning of an HTTP status; adapters refine it with the platform's codes."""
    if status in (401, 403):
        return AgentAuthError(detail, status=status, code=code)
    if status == 402:
        return AgentQuotaExceeded(detail, status=status, code=code)
    if status == 404:
        return AgentNotFound(detail, status=status, code=code)
    if status == 408:
        return AgentTimeout(detail, status=status, code=code)
    if status == 429:
        return AgentRateLimited(detail, status=status, code=code, retry_after=retry_after)
    if status >= 500:
        return AgentUnavailable(detail, status=status, code=code)
    if status >= 400:
        return AgentBadRequest(detail, status=status, code=code)
    return AgentProtocolError(detail, status=status, code=code)


# --- non-streaming requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete, size-bounded answer to a non-streaming request."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any | None:
        return parse_json(self.body)


async def fetch(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeouts: httpx.Timeout,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    limit: int = REPLY_BODY_LIMIT,
) -> Reply:
    """One request whose body is read completely (up to `limit`); transport errors mapped."""
    async with open_stream(
        http,
        method,
        url,
        timeouts=timeouts,
        headers=headers,
        json=json,
        params=params,
        secrets=secrets,
    ) as response:
        body = await read_body(response, limit if response.is_success else ERROR_BODY_LIMIT)
        return Reply(response.status_code, response.headers, body)
