"""Plumbing shared by every HTTP adapter: timeouts, headers, streaming requests, SSE, error bodies.

Adapters get an `httpx.AsyncClient` from the app factory and never create one. This module turns
httpx's transport failures into the `AgentError` hierarchy, so each adapter only maps what its
platform *says* (status codes, error bodies, error events), not what the network does. Each
adapter holds one `AgentWire`: its agent's base URL, headers, timeouts and secrets, the calls
made with them, and the logging of their failures, the same for every platform.

Timeouts: the read timeout is the agent's *silence* timeout. It also covers the wait for the
response headers, because Dify sends its headers only together with the first event (10 s and
more with a slow model), so a short "time to headers" limit would fail healthy requests. On
the body it is enforced here, by one watchdog per stream, whatever the transport (the bot's
own transport, `bot.agents.aiohttp_transport`, leaves the body to it).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
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
    ConversationNotFound,
    Usage,
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
    "AgentSettings",
    "AgentWire",
    "ErrorInfo",
    "ErrorMapper",
    "Reply",
    "TimeoutSettings",
    "error_for_status",
    "error_info",
    "excerpt",
    "is_event_stream",
    "iter_sse",
    "make_timeout",
    "merge_headers",
    "open_stream",
    "parse_json",
    "parse_retry_after",
    "read_body",
    "read_reply",
    "redact",
    "token_usage",
    "transport_error",
]


class TimeoutSettings(Protocol):
    """The two timeout fields every agent config has (properties: the configs are frozen)."""

    @property
    def connect_timeout(self) -> float: ...

    @property
    def silence_timeout(self) -> float: ...


class AgentSettings(TimeoutSettings, Protocol):
    """What an `AgentWire` reads from an agent's config (every agent config has these)."""

    @property
    def platform(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, SecretStr]: ...

    def secrets(self) -> list[str]: ...


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
        # After the headers it can only be a broken connection (as some transports report
        # one): a cut.
        return AgentStreamCut(detail) if started else AgentUnavailable(detail)
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
        self._chunks: AsyncIterator[bytes] | None = None
        self._watchdog: _Watchdog | None = None

    # An iterator class, not an async generator: every stream in flight holds one, and a
    # generator costs ~450 bytes more (its frame, its weak reference in the event loop).
    def __aiter__(self) -> AsyncIterator[bytes]:
        self._chunks = aiter(self._inner)
        self._watchdog = _Watchdog(self._seconds)
        return self

    async def __anext__(self) -> bytes:
        watchdog, chunks = self._watchdog, self._chunks
        assert watchdog is not None, "iterate with async for"
        assert chunks is not None
        watchdog.waiting()
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            watchdog.close()
            raise
        except asyncio.CancelledError:
            if watchdog.fired():
                raise httpx.ReadTimeout(f"no data for {self._seconds:g} s") from None
            raise
        finally:
            watchdog.resting()

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
        await self._inner.aclose()


class _Watchdog:
    """Cancels the reading task once one wait for data has lasted `seconds`.

    One timer per stream, moved on lazily: when it fires during a wait that began later, it is
    set again for that wait's end. A chunk costs a clock read, where `asyncio.timeout` around
    each read scheduled and cancelled a timer per chunk (measured: ~8 % of the bot's CPU with
    1,000 answers streaming).
    """

    __slots__ = ("_cancelled", "_handle", "_loop", "_seconds", "_since", "_task")

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._since: float | None = None  # when the current wait began; None: not waiting
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelled = False

    def waiting(self) -> None:
        self._since = self._loop.time()
        self._task = asyncio.current_task()
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._seconds, self._check)

    def resting(self) -> None:
        self._since = None

    def fired(self) -> bool:
        """Whether the cancellation being raised is this watchdog's alone (like
        `asyncio.timeout`: a cancellation from elsewhere at the same time wins)."""
        if not self._cancelled:
            return False
        self._cancelled = False
        return self._task is not None and self._task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._since is None or self._task is None:
            return  # not waiting now: the next wait sets the timer again
        due = self._since + self._seconds
        if self._loop.time() >= due:
            self._cancelled = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)


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


def token_usage(value: object, prompt: str, completion: str, total: str) -> Usage | None:
    """The token counts of a usage object under the platform's key names (`prompt` and so on);
    None when `value` is no object. A count that is not an integer is missing."""
    if not isinstance(value, dict):
        return None

    def count(key: str) -> int | None:
        number = value.get(key)
        return number if isinstance(number, int) and not isinstance(number, bool) else None

    return Usage(count(prompt), count(completion), count(total))


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


# --- error bodies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an error body says, whatever its shape."""

    code: str | None = None
    type: str | None = None
    message: str | None = None

    @property
    def label(self) -> str | None:
        """The most specific identifier, for `AgentError.code`."""
        return self.code or self.type


def error_info(payload: object) -> ErrorInfo:
    """Read an error body: OpenAI's `{"error": {message, type, code}}`, Timeweb's management
    `BaseError` `{status_code, error_code, message}`, `{"error": "text"}`, or FastAPI-style
    `{"detail": ...}`. Anything else gives an empty ErrorInfo (the caller logs the raw body)."""
    if not isinstance(payload, dict):
        return ErrorInfo()
    inner = payload.get("error")
    if isinstance(inner, dict):
        return ErrorInfo(
            code=_label(inner.get("code")),
            type=_label(inner.get("type")),
            message=_message(inner.get("message")),
        )
    return ErrorInfo(
        code=_label(payload.get("error_code")) or _label(payload.get("code")),
        type=_label(payload.get("type")),
        message=(
            _message(payload.get("message")) or _message(inner) or _message(payload.get("detail"))
        ),
    )


def _label(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):  # some servers put the HTTP status into `code`
        return str(value)
    return value if isinstance(value, str) and value else None


def _message(value: object) -> str | None:
    """A message that may be a string, a list of strings, or a list of `{msg}` objects."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        parts = [_message(item.get("msg") if isinstance(item, dict) else item) for item in value]
        joined = "; ".join(p for p in parts if p)
        return joined or None
    return None


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


async def read_reply(response: httpx.Response, limit: int = ERROR_BODY_LIMIT) -> Reply:
    """The response with up to `limit` bytes of its body, e.g. an error answer to a stream."""
    return Reply(response.status_code, response.headers, await read_body(response, limit))


# --- one agent's HTTP side -----------------------------------------------------------------------

# The platform's reading of an error answer (any non-2xx, or a 2xx that is none of the answers
# asked for). It must pass every text it quotes from the body through `AgentWire.redact`.
ErrorMapper = Callable[[Reply], AgentError]


class AgentWire:
    """One agent's HTTP side: where it is, how it is called, and how its failures are logged.

    Every adapter talks to its platform through one, so the plumbing is the same everywhere:
    requests carry the agent's headers, timeouts and secrets; transport failures come out as
    AgentErrors; error answers go through the platform's `map_error`; and every failure is
    logged once per call with the agent's label ("dify agent support") and the call (`what`),
    secrets redacted. What a platform *says* (its error bodies, its events) stays in its adapter.

    `own_headers` are the adapter's (authentication, Accept); the configured headers are applied
    on top of them (see `merge_headers`). `base_url` defaults to the configured one.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        config: AgentSettings,
        *,
        logger: logging.Logger,
        map_error: ErrorMapper,
        own_headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        log_error_bodies: bool = False,
    ) -> None:
        self._http = http
        self._base = (config.base_url if base_url is None else base_url).rstrip("/")
        self._headers = merge_headers(own_headers or {}, config.headers)
        # Streaming requests also ask for an event stream; as everywhere, a configured header
        # (even Accept) wins.
        self._stream_headers = merge_headers(
            {**(own_headers or {}), "Accept": "text/event-stream"}, config.headers
        )
        self._timeouts = make_timeout(config)
        self.secrets: tuple[str, ...] = tuple(config.secrets())
        self.logger = logger
        self.label = f"{config.platform} agent {config.name}"
        self._map_error = map_error
        # Where a platform's error bodies are undocumented (Timeweb), their raw excerpt is
        # logged with every error answer, so an operator can see what the platform said.
        self._log_error_bodies = log_error_bodies

    def redact(self, text: str) -> str:
        """`text` without any of this agent's secrets (for error details and log lines)."""
        return redact(text, self.secrets)

    async def fetch(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """One non-streaming request, any status, its body read completely (up to
        REPLY_BODY_LIMIT, an error's up to ERROR_BODY_LIMIT); transport failures logged and
        raised."""
        try:
            request = self._request(method, path, self._headers, json=json, params=params)
            async with request as response:
                limit = REPLY_BODY_LIMIT if response.is_success else ERROR_BODY_LIMIT
                return await read_reply(response, limit)
        except AgentError as exc:
            self.log_failure(path.rsplit("/", 1)[-1], exc)
            raise

    def open_stream(
        self, method: str, path: str, *, json: Any = None
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """A streaming request (see the module's `open_stream`). Failures are not logged here:
        only the caller knows whether one ends the answer (Chaindesk's may not)."""
        return self._request(method, path, self._stream_headers, json=json)

    def _request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[httpx.Response]:
        return open_stream(
            self._http,
            method,
            f"{self._base}{path}",
            timeouts=self._timeouts,
            headers=headers,
            json=json,
            params=params,
            secrets=self.secrets,
        )

    def raise_for(self, reply: Reply, what: str, map_error: ErrorMapper | None = None) -> None:
        """Raise (and log) the platform's error unless the reply is a 2xx.

        `map_error` replaces the wire's mapper for this one call (Timeweb's mapping depends
        on whether the request continued a chat).
        """
        if reply.ok:
            return
        error = (map_error or self._map_error)(reply)
        self.log_failure(what, error, reply.body if self._log_error_bodies else None)
        raise error

    def refused_stream(self, reply: Reply, what: str) -> AgentError:
        """The error for an answer to a streaming request that is not the stream asked for."""
        if reply.status == 200:
            # A blocking answer or an HTML page where an event stream was asked for.
            content_type = reply.headers.get("content-type", "(none)")
            return self.protocol_error(
                what, f"expected an event stream, got {content_type}", reply.body
            )
        return self._map_error(reply)

    def protocol_error(self, what: str, problem: str, data: bytes | str) -> AgentProtocolError:
        """An answer this adapter cannot read: logged with a redacted sample, then returned."""
        sample = self.redact(excerpt(data, EXCERPT_CHARS))
        self.logger.warning("%s: %s: %s: %r", self.label, what, problem, sample)
        return AgentProtocolError(f"{problem}: {sample}")

    def log_failure(self, what: str, error: AgentError, body: bytes | None = None) -> None:
        """One line for a failed call; a given error `body` is logged too, as a redacted excerpt.

        str(error) carries kind, status, code and the platform's (redacted) message only.
        """
        sample = self.redact(excerpt(body)) if body else ""
        # The body is the detail already when it held no readable message.
        raw = f" body={sample!r}" if sample and sample not in error.detail else ""
        # An expired conversation is routine (the bot starts a new one), not a warning.
        level = logging.INFO if isinstance(error, ConversationNotFound) else logging.WARNING
        self.logger.log(
            level,
            "%s: %s failed: status=%s code=%s: %s%s",
            self.label,
            what,
            error.status,
            error.code,
            error,
            raw,
        )
