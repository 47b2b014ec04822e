"""`relaygram run | check | ask`. Exit status is non-zero on failure, with a one-line reason."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TextIO

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError

from bot.agents.base import (
    AgentClient,
    AgentError,
    AgentEvent,
    AgentRequest,
    AnswerAccumulator,
    Failed,
    Finished,
    ReasoningDelta,
    Sources,
    Started,
    TextDelta,
    TextReplace,
)
from bot.agents.registry import AgentDirectory
from bot.app import agent_http_client, create_app, replica_name
from bot.config import AgentsConfig, ConfigError, Settings, load_agents, load_settings
from bot.logs import setup_logging
from storage import StorageUnavailable, open_redis

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        agents = load_agents(settings.agents_file)
        secrets = _secrets(settings, agents)
        # `ask` reports its own failure in one line; log lines would only repeat it.
        level = "ERROR" if args.command == "ask" and settings.log_level != "DEBUG" else None
        setup_logging(level or settings.log_level, secrets, replica_name(settings))
        if args.command == "run":
            return asyncio.run(_run(settings, agents))
        if args.command == "check":
            return asyncio.run(_check(settings, agents))
        return asyncio.run(_ask(agents, args.agent, args.text, args.json, sys.stdout))
    except ConfigError as exc:
        print(f"relaygram: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaygram", description="A Telegram bot that streams answers from AI agents."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the bot (long polling)")
    commands.add_parser("check", help="validate the configuration, call getMe, reach each agent")
    ask = commands.add_parser("ask", help="stream one answer from an agent to the terminal")
    ask.add_argument("--agent", help="agent name from the agents file (default: the default)")
    ask.add_argument("--json", action="store_true", help="print one JSON event per line")
    ask.add_argument("text", help="the question")
    return parser


def _secrets(settings: Settings, agents: AgentsConfig) -> list[str]:
    values = [
        s.get_secret_value()
        for s in (settings.bot_token, settings.redis_url, settings.webhook_secret)
        if s is not None
    ]
    return values + agents.secrets()


async def _run(settings: Settings, agents: AgentsConfig) -> int:
    settings.require_bot_token()
    try:
        app = await create_app(settings, agents)
    except StorageUnavailable as exc:
        print(f"relaygram: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    # Everything built so far (aiogram's ~440 models, the app) lives as long as the process:
    # move it out of the garbage collector's sight, or every full collection walks it again
    # (300-500 ms stalls every few seconds were measured at 1,000 answers).
    gc.collect()
    gc.freeze()
    try:
        await app.run_polling()
    finally:
        await app.aclose()
    return 0


async def _check(settings: Settings, agents_config: AgentsConfig) -> int:
    failures = 0
    token = settings.require_bot_token().get_secret_value()
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(token, session=session)
    try:
        me = await bot.get_me()
        print(f"telegram: ok, @{me.username} (id {me.id})")
    except TelegramAPIError as exc:
        failures += 1
        print(f"telegram: FAILED: {exc.message}")
    finally:
        await session.close()

    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    try:
        redis, embedded = await open_redis(redis_url)
        await redis.aclose()
        print(
            "redis: ok"
            + (" (embedded in-memory store: state is lost on restart)" if embedded else "")
        )
    except StorageUnavailable as exc:
        failures += 1
        print(f"redis: FAILED: {exc}")

    async with agent_http_client() as http:
        directory = AgentDirectory(agents_config, http)
        for client in directory:
            marker = " (default)" if client.name == directory.default else ""
            try:
                description = await client.check()
                print(f"agent {client.name}{marker} [{client.platform}]: ok, {description}")
            except AgentError as exc:
                failures += 1
                print(f"agent {client.name}{marker} [{client.platform}]: FAILED: {exc}")
    return EXIT_FAILURE if failures else 0


async def _ask(
    agents_config: AgentsConfig, agent: str | None, text: str, as_json: bool, out: TextIO
) -> int:
    name = agent or agents_config.default
    if name not in agents_config.agents:
        known = ", ".join(sorted(agents_config.agents))
        raise ConfigError(f"--agent: no agent named {name!r} (configured: {known})")
    async with agent_http_client() as http:
        client: AgentClient | None = AgentDirectory(agents_config, http).get(name)
        assert client is not None
        answer = AnswerAccumulator()
        request = AgentRequest(text=text, user="relaygram-cli")
        async for event in client.stream(request):
            answer.apply(event)
            _print_event(event, answer, as_json, out)
    if not as_json and answer.text:
        out.write("\n")
    out.flush()
    if answer.error is not None:
        print(f"relaygram: {client.name}: {answer.error}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _print_event(event: AgentEvent, answer: AnswerAccumulator, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(_event_json(event), ensure_ascii=False) + "\n")
    elif isinstance(event, TextDelta):
        out.write(event.text)
    elif isinstance(event, TextReplace):
        out.write(f"\n[replaced]\n{answer.text}")
    out.flush()


def _event_json(event: AgentEvent) -> dict[str, object]:
    match event:
        case Started():
            return {"event": "started", **asdict(event)}
        case TextDelta(text=text):
            return {"event": "text", "text": text}
        case TextReplace(text=text):
            return {"event": "replace", "text": text}
        case ReasoningDelta(text=text):
            return {"event": "reasoning", "text": text}
        case Sources(items=items):
            return {"event": "sources", "items": [asdict(i) for i in items]}
        case Finished():
            data = asdict(event)
            return {"event": "finished", **data}
        case Failed(error=error):
            return {
                "event": "failed",
                "kind": error.kind,
                "status": error.status,
                "detail": str(error),
            }
    raise AssertionError(f"unknown event {event!r}")


if __name__ == "__main__":
    raise SystemExit(main())
