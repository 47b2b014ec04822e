"""httpx's transport over aiohttp: how the bot's agent requests reach the network.

Adapters keep speaking httpx (and the tests keep `httpx.MockTransport`); only the bytes move
through aiohttp, which aiogram brings anyway. Its C parser hands over everything a stream has
buffered in one piece, where httpcore yields each HTTP chunk on its own, so a busy bot reads
several agent events per wake-up (BENCHMARKS.md: with 1,000 answers streaming, CPU per chunk
0.24 -> 0.19 ms, and agent requests of 1,000 simultaneous messages started 2.5x sooner).

Written here rather than taken from httpx-aiohttp (0.2, tried first): that transport caps
the pool at aiohttp's 100 unless told otherwise, reports every connection error (a reset
mid-body included) as ConnectTimeout, and keeps aiohttp's read timer on the body, which
aiohttp re-arms on every read (7 % of the bot's CPU at 1,000 answers, measured) although
`bot.agents.http` watches the body's silence already, with one timer per stream.

What it does: no cap on connections (every running answer holds a stream open); httpx's
certificate checks (certifi, or SSL_CERT_FILE / SSL_CERT_DIR); the read
timeout covers the wait for the response headers only; aiohttp's errors become the httpx
exceptions `bot.agents.http.transport_error` maps. Unlike httpx's `retries=1` before it, a
refused connection is not tried again: the user sees "unavailable" a moment sooner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

# Idle keep-alive connections are closed after this long, like httpx's default.
KEEPALIVE_SECONDS = 5.0
READ_BUFFER = 8 * 1024  # per connection; aiohttp pauses reading at twice this


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, opened at the first request (inside the running event loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._send(request)
        # The wait for the headers was the transport's; the body's silence is watched by the
        # caller (`bot.agents.http`), so aiohttp needs no timer per read.
        if response.connection is not None and response.connection.protocol is not None:
            response.connection.protocol.read_timeout = None
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, request: httpx.Request) -> aiohttp.ClientResponse:
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()  # agent requests are small JSON documents
        try:
            return await self._client().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        except aiohttp.ClientConnectorError as exc:  # refused, unknown host, TLS
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError) as exc:
            kind = (
                httpx.ConnectTimeout
                if isinstance(exc, aiohttp.ConnectionTimeoutError)
                else httpx.ReadTimeout
            )
            raise kind(str(exc) or "timed out", request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:  # disconnected or reset before the headers
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # limit=0: no cap on connections.
                connector=aiohttp.TCPConnector(
                    limit=0,
                    keepalive_timeout=KEEPALIVE_SECONDS,
                    # Certificates are checked as httpx checks them: certifi's authorities, or
                    # the operator's own through SSL_CERT_FILE / SSL_CERT_DIR.
                    ssl=httpx.create_ssl_context(),
                ),
                # httpx decodes bodies (it sees Content-Encoding). No proxies from the
                # environment: the httpx transport before this one used none either.
                auto_decompress=False,
                trust_env=False,
                # A stream the bot reads slower than it arrives (a busy bot, a thousand at
                # once) waits in the kernel's socket buffer, not in ours. With aiohttp's
                # default (64 KiB, paused at 128) 1,000 streams of a lagging bot held 27 MB
                # of unread events (a tracemalloc run, which slows the bot).
                read_bufsize=READ_BUFFER,
            )
        return self._session


class _Body(httpx.AsyncByteStream):
    # An iterator class, not an async generator: every stream in flight holds one, and a
    # generator costs ~450 bytes more (its frame, its weak reference in the event loop).
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except aiohttp.EofStream:
            raise StopAsyncIteration from None
        except aiohttp.ClientError as exc:  # incomplete body, reset, closed mid-body
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        if not chunk:  # aiohttp's iter_any() ends the same way: b"" at the end of the body
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end; closed otherwise.
        self._response.release()
