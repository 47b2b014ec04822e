"""Serve `FakeDify` over real HTTP, so `relaygram ask` / `relaygram run` can talk to it.

    python -m tests.fakes.dify_server --port 5001 --api-key app-test

then point an agent at it:

    [agents.fake]
    platform = "dify"
    base_url = "http://127.0.0.1:5001/v1"
    api_key = "app-test"

Every request is converted to an `httpx.Request`, answered by the same `FakeDify` the tests use,
and its body streamed back chunk by chunk (aiohttp uses chunked encoding, as Dify's gunicorn
does), so streaming, pings, stops and cut streams behave as they do in the tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import httpx
from aiohttp import web

from tests.fakes.dify import FakeApp, FakeDify, Script

# Framing headers aiohttp sets itself for the body it writes.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})
FAKE_KEY: web.AppKey[FakeDify] = web.AppKey("fake_dify", FakeDify)


def make_app(fake: FakeDify) -> web.Application:
    app = web.Application()
    app[FAKE_KEY] = fake
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


async def _forward(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_KEY]
    outgoing = httpx.Request(
        request.method,
        str(request.url),
        headers=[(k, v) for k, v in request.headers.items() if k.lower() != "host"],
        content=await request.read(),
    )
    answer = await fake(outgoing)
    response = web.StreamResponse(
        status=answer.status_code,
        headers={k: v for k, v in answer.headers.items() if k.lower() not in _FRAMING},
    )
    try:
        await response.prepare(request)
        async for chunk in answer.aiter_bytes():
            await response.write(chunk)  # one write per event: flushed as it is produced
        await response.write_eof()
    finally:
        await answer.aclose()  # a client that hung up ends the fake's running answer
    return response


def build_fake(args: argparse.Namespace) -> FakeDify:
    script = Script(delay=args.delay, first_delay=args.first_delay)
    app = FakeApp(
        api_key=args.api_key,
        name=args.name,
        mode=args.mode,
        default_script=script,
        suggested=None if args.no_suggestions else FakeApp().suggested,
    )
    return FakeDify(app)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A fake Dify Service API for manual testing.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--api-key", default="app-test", help="the app key clients must send")
    parser.add_argument("--name", default="Fake chat app", help="the app name /v1/info reports")
    parser.add_argument("--mode", choices=("chat", "agent-chat"), default="chat")
    parser.add_argument(
        "--delay", type=float, default=0.15, help="seconds between answer chunks (default 0.15)"
    )
    parser.add_argument(
        "--first-delay", type=float, default=0.0, help="seconds before the first chunk"
    )
    parser.add_argument(
        "--no-suggestions", action="store_true", help="answer suggested questions as disabled"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    fake = build_fake(args)
    print(  # a command-line tool's banner
        f"Fake Dify on http://{args.host}:{args.port}/v1 (API key {args.api_key!r}); Ctrl+C stops"
    )
    web.run_app(make_app(fake), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
