"""One `httpx.MockTransport` in front of several fake agent platforms, routed by host.

The bot has one HTTP client for every agent (`bot/app.py`), so a test with agents on several
platforms needs one transport that sends each request to the fake living at its host:

    router = HostRouter({"dify.test": FakeDify(), "timeweb.test": FakeTimeweb()})
    http = httpx.AsyncClient(transport=router.transport())

A request to a host nobody serves fails to connect, as a wrong `base_url` does in production.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import httpx

FakeServer = Callable[[httpx.Request], Awaitable[httpx.Response]]
"""Any of the fakes: called with a request, it answers a response."""


class HostRouter:
    def __init__(self, fakes: Mapping[str, FakeServer]) -> None:
        self.fakes = {host.lower(): fake for host, fake in fakes.items()}
        self.requests: list[httpx.Request] = []  # every request, in order, whichever host

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        fake = self.fakes.get(request.url.host.lower())
        if fake is None:
            raise httpx.ConnectError(f"no fake agent serves {request.url.host!r}", request=request)
        return await fake(request)

    def hosts(self) -> list[str]:
        """The host of every request so far, in order."""
        return [r.url.host for r in self.requests]
