"""Serve any fake agent platform over real HTTP, so `relaygram ask` / `relaygram run` can use it.

    python -m tests.fakes.serve dify --port 5001 --key app-test
    python -m tests.fakes.serve dify-console --port 5002 --gateway     # Olares: no token
    python -m tests.fakes.serve chaindesk --port 5003 --key cd-key      # no --key: public agent
    python -m tests.fakes.serve timeweb --port 5004 --key tw-token      # no --key: public API
    python -m tests.fakes.serve openai --port 5005 --key sk-test        # no --key: none needed

On start it prints the `[agents.NAME]` table that points an agents file at it. Every request
becomes an `httpx.Request`, is answered by the same fake the tests use (tests/fakes/), and the
answer's body is streamed back chunk by chunk (aiohttp uses chunked encoding, as the real
servers do), so streaming, stops, connection closes and cut streams behave as in the tests.
The fakes echo ("Echo: <question>") word by word, `--delay` seconds apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from aiohttp import web

from tests.fakes import chaindesk, dify, dify_console, openai, timeweb
from tests.fakes.router import FakeServer

PLATFORMS = ("dify", "dify-console", "chaindesk", "timeweb", "openai")
DEFAULT_DIFY_KEY = dify.DEFAULT_API_KEY

# Framing headers aiohttp sets itself for the body it writes.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})
FAKE_KEY: web.AppKey[FakeServer] = web.AppKey("fake_server")

# Two example sources (`--sources`): Dify's retriever_resources, Chaindesk's sources.
_DIFY_RESOURCES = (
    {
        "position": 1,
        "document_id": "doc-pricing",
        "document_name": "Pricing",
        "url": "https://docs.example.com/pricing",
    },
    {
        "position": 2,
        "document_id": "doc-faq",
        "document_name": "FAQ",
        "url": "https://docs.example.com/faq",
    },
)
_CHAINDESK_SOURCES = (
    {
        "datasource_id": "ds-pricing",
        "datasource_name": "Pricing",
        "source_url": "https://docs.example.com/pricing",
    },
    {
        "datasource_id": "ds-faq",
        "datasource_name": "FAQ",
        "source_url": "https://docs.example.com/faq",
    },
)


def make_app(fake: FakeServer) -> web.Application:
    """An aiohttp application answering every path with `fake` (any of tests/fakes/)."""
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
    except ConnectionResetError:
        pass  # the client hung up (a stop): closing the answer below is what the fake notices
    finally:
        await answer.aclose()  # a client that hung up ends the fake's running answer
    return response


# --- building a fake from the command line --------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A fake, what to call it, and the agents-file table that points at it."""

    fake: FakeServer
    description: str
    table: dict[str, str]


def build(args: argparse.Namespace) -> Served:
    root = f"http://{args.host}:{args.port}"
    key: str | None = args.key
    match args.platform:
        case "dify":
            return _dify(args, root, key or DEFAULT_DIFY_KEY)
        case "dify-console":
            return _dify_console(args, root, key)
        case "chaindesk":
            return _chaindesk(args, root, key)
        case "timeweb":
            return _timeweb(args, root, key)
        case _:
            return _openai(args, root, key)


def _dify_script(args: argparse.Namespace) -> dify.Script:
    return dify.Script(
        delay=args.delay,
        first_delay=args.first_delay,
        retriever_resources=_DIFY_RESOURCES if args.sources else (),
    )


def _dify(args: argparse.Namespace, root: str, key: str) -> Served:
    app = dify.FakeApp(
        api_key=key,
        name=args.name or "Fake chat app",
        mode=args.mode,
        default_script=_dify_script(args),
        suggested=None if args.no_suggestions else dify.DEFAULT_SUGGESTIONS,
    )
    return Served(
        dify.FakeDify(app),
        "Fake Dify Service API",
        {"platform": "dify", "base_url": f"{root}/v1", "api_key": key},
    )


def _dify_console(args: argparse.Namespace, root: str, key: str | None) -> Served:
    app = dify_console.FakeConsoleApp(
        name=args.name or "Fake console app",
        mode=args.mode,
        default_script=_dify_script(args),
        suggested=None if args.no_suggestions else dify.DEFAULT_SUGGESTIONS,
    )
    fake = dify_console.FakeDifyConsole(
        app,
        # Behind Olares' gateway there is no token to send; directly, a console token.
        token=None if args.gateway else key,
        gateway=args.gateway,
    )
    table = {
        "platform": "dify-console",
        "base_url": f"{root}{fake.base_path}",
        "app_id": app.app_id,
    }
    if fake.token is not None:
        table["api_key"] = fake.token
    what = (
        "Fake Olares gateway (Dify console API, 30 s cut)" if args.gateway else "Fake Dify console"
    )
    return Served(fake, what, table)


def _chaindesk(args: argparse.Namespace, root: str, key: str | None) -> Served:
    agent = chaindesk.FakeAgent(
        name=args.name or "Fake docs agent",
        private=key is not None,
        default_script=chaindesk.Script(
            delay=args.delay,
            first_delay=args.first_delay,
            sources=_CHAINDESK_SOURCES if args.sources else (),
        ),
    )
    if key is not None:
        agent.org_key = key
    table = {"platform": "chaindesk", "base_url": root, "agent_id": agent.id}
    if key is not None:
        table["api_key"] = key
    fake = chaindesk.FakeChaindesk(agent, rewrite=not args.no_rewrite)
    return Served(fake, "Fake Chaindesk", table)


def _timeweb(args: argparse.Namespace, root: str, key: str | None) -> Served:
    # No streaming: the whole answer after --first-delay (plus --delay, as a model's time).
    script = timeweb.Script(delay=args.first_delay + args.delay)
    agent = timeweb.FakeAgent(token=key, default_script=script)
    table = {"platform": "timeweb", "base_url": root, "agent_id": agent.access_id}
    if key is not None:
        table["token"] = key
    return Served(timeweb.FakeTimeweb(agent), "Fake Timeweb Cloud AI (native /call)", table)


def _openai(args: argparse.Namespace, root: str, key: str | None) -> Served:
    completion = openai.Completion(delay=args.delay, first_delay=args.first_delay)
    fake = openai.FakeOpenAI(api_key=key, default=completion)
    table = {"platform": "openai", "base_url": f"{root}{fake.base_path}", "model": "agent"}
    if key is not None:
        table["api_key"] = key
    return Served(fake, "Fake OpenAI-compatible endpoint", table)


def agents_table(name: str, table: dict[str, str]) -> str:
    lines = [f"[agents.{name}]", *(f'{k} = "{v}"' for k, v in table.items())]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.serve",
        description="Serve a fake agent platform over HTTP for manual testing.",
    )
    parser.add_argument("platform", choices=PLATFORMS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--key",
        "--api-key",
        dest="key",
        help=(
            "the key clients must send: Dify app key (default app-test), console token, "
            "Chaindesk organisation key (makes the agent private), Timeweb token, OpenAI key"
        ),
    )
    parser.add_argument("--name", help="the app or agent name the fake reports")
    parser.add_argument(
        "--delay", type=float, default=0.15, help="seconds between answer chunks (default 0.15)"
    )
    parser.add_argument(
        "--first-delay", type=float, default=0.0, help="seconds before the first chunk"
    )
    parser.add_argument(
        "--sources", action="store_true", help="attach two example sources (dify, chaindesk)"
    )
    parser.add_argument(
        "--mode", choices=("chat", "agent-chat"), default="chat", help="Dify app mode"
    )
    parser.add_argument(
        "--no-suggestions",
        action="store_true",
        help="Dify: answer suggested questions as disabled",
    )
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="dify-console: play Olares' gateway (no token, its path, streams cut at 30 s)",
    )
    parser.add_argument(
        "--no-rewrite",
        action="store_true",
        help="chaindesk: a host without the /agents rewrite (clients must fall back to /api)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    served = build(args)
    name = f"fake-{args.platform}"
    print(  # a command-line tool's banner
        f"{served.description} on http://{args.host}:{args.port}; Ctrl+C stops.\n"
        f"In the agents file:\n\n{agents_table(name, served.table)}\n",
        flush=True,
    )
    web.run_app(make_app(served.fake), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
