"""`relaygram run | check | ask`, run in-process through `bot.cli.main` as a user would run it.

The agent is `FakeDify` and the Bot API is `FakeTelegramServer`, both over real HTTP on
127.0.0.1, served by an event loop in a background thread (`main()` runs its own `asyncio.run`).
Whatever happens, the exit status says how it went, failures are one line, and no secret
(bot token, API keys) is ever printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from bot.cli import main
from bot.config import Settings
from tests.fakes.dify import FakeApp, FakeDify, Script
from tests.fakes.dify_server import make_app
from tests.fakes.telegram import FakeTelegram, FakeTelegramServer

T = TypeVar("T")

BOT_TOKEN = "123456:s3cr3t-bot-token-value"
DIFY_KEY = "app-s3cr3t-key-value"
WRONG_KEY = "app-wr0ng-s3cr3t-key"
SECRETS = (BOT_TOKEN, DIFY_KEY, WRONG_KEY)
ANSWER_CHUNKS = ("Hello ", "from ", "the ", "fake ", "Dify.")
ROOT = Path(__file__).resolve().parent.parent

SETTINGS_VARIABLES = tuple(name.upper() for name in Settings.model_fields)


class BackgroundLoop:
    """An event loop in a thread, for servers the synchronous `main()` talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Servers:
    background: BackgroundLoop
    dify: FakeDify
    dify_url: str
    telegram: FakeTelegram
    telegram_url: str


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`main()` installs its own root handler (on the captured stderr); undo that afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no `.env` from the developer's checkout
    agents_file = tmp_path / "agents.toml"
    monkeypatch.setenv("AGENTS_FILE", str(agents_file))
    monkeypatch.setenv("DIFY_KEY", DIFY_KEY)
    monkeypatch.setenv("WRONG_KEY", WRONG_KEY)
    return agents_file


@pytest.fixture
def servers() -> Iterator[Servers]:
    background = BackgroundLoop()
    dify = FakeDify(
        FakeApp(
            api_key=DIFY_KEY,
            name="Fake chat app",
            default_script=Script(chunks=ANSWER_CHUNKS, delay=0.01),
        )
    )
    telegram = FakeTelegram(token=BOT_TOKEN)

    async def start() -> tuple[web.AppRunner, FakeTelegramServer]:
        runner = web.AppRunner(make_app(dify), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        server = FakeTelegramServer(telegram)
        await server.start()
        return runner, server

    runner, telegram_server = background.run(start())
    port = runner.addresses[0][1]
    try:
        yield Servers(
            background, dify, f"http://127.0.0.1:{port}/v1", telegram, telegram_server.url
        )
    finally:

        async def stop() -> None:
            await telegram_server.close()
            await runner.cleanup()

        background.run(stop())
        background.close()


def write_agents(path: Path, default: str = "support", **agents: str) -> None:
    """Dify agents by name -> base URL, each with the key in `${DIFY_KEY}`; a name ending in
    `_broken` uses the wrong key instead."""
    text = f'default = "{default}"\n'
    for name, url in agents.items():
        key = "WRONG_KEY" if name.endswith("_broken") else "DIFY_KEY"
        text += (
            f'\n[agents.{name}]\nplatform = "dify"\nbase_url = "{url}"\napi_key = "${{{key}}}"\n'
        )
    path.write_text(text, encoding="utf-8")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    code = main(list(argv))
    captured = capsys.readouterr()
    outcome = Outcome(code, captured.out, captured.err)
    for secret in SECRETS:
        assert secret not in outcome.out, f"secret on stdout: {outcome.out}"
        assert secret not in outcome.err, f"secret on stderr: {outcome.err}"
    assert "Traceback" not in outcome.err, outcome.err
    return outcome


# --- ask ------------------------------------------------------------------------------------------


def test_ask_prints_the_streamed_answer(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support=servers.dify_url)

    result = run_cli(capsys, "ask", "hello there")

    assert result.code == 0, result.err
    assert result.out == "Hello from the fake Dify.\n"
    assert result.err == ""
    chat = servers.dify.calls_to("POST", "/chat-messages")
    assert [c.json["query"] for c in chat] == ["hello there"]


class TimedOutput:
    """A terminal that remembers when each piece of text was written to it."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return len(text)

    def flush(self) -> None:
        pass


def test_ask_prints_text_while_it_arrives(
    servers: Servers, environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers.dify.app.default_script = Script(chunks=ANSWER_CHUNKS, delay=0.15)
    write_agents(environment, support=servers.dify_url)
    terminal = TimedOutput()
    monkeypatch.setattr(sys, "stdout", terminal)

    assert main(["ask", "hi"]) == 0

    first = next(at for at, text in terminal.writes if "Hello" in text)
    last = next(at for at, text in terminal.writes if "Dify." in text)
    assert last - first >= 0.4, "the first words are shown before the answer is complete"
    assert "".join(text for _, text in terminal.writes) == "Hello from the fake Dify.\n"


def test_ask_json_prints_one_event_per_line(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support=servers.dify_url)

    result = run_cli(capsys, "ask", "--json", "hello")

    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert kinds[1:-1] == ["text"] * len(ANSWER_CHUNKS)
    assert "".join(e["text"] for e in events if e["event"] == "text") == "".join(ANSWER_CHUNKS)
    started, finished = events[0], events[-1]
    assert started["conversation"]
    assert finished["conversation"] == started["conversation"]
    assert finished["message_id"] == started["message_id"]
    assert finished["finish_reason"] == "stop"


def test_ask_a_named_agent(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, default="support_broken", support_broken=servers.dify_url)
    with environment.open("a", encoding="utf-8") as agents:
        agents.write(
            f'\n[agents.good]\nplatform = "dify"\nbase_url = "{servers.dify_url}"\n'
            'api_key = "${DIFY_KEY}"\n'
        )

    result = run_cli(capsys, "ask", "--agent", "good", "hi")

    assert result.code == 0, result.err
    assert result.out == "Hello from the fake Dify.\n"


def test_ask_an_unknown_agent_exits_2_naming_it(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support=servers.dify_url)

    result = run_cli(capsys, "ask", "--agent", "nope", "hi")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert "'nope'" in result.err
    assert "support" in result.err, "the message lists the configured agents"
    assert result.out == ""
    assert servers.dify.calls == [], "nothing is sent anywhere"


def test_ask_against_a_dead_agent_exits_1_with_one_line(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support=f"http://127.0.0.1:{free_port()}/v1")

    result = run_cli(capsys, "ask", "hi")

    assert result.code == 1
    assert len(result.err_lines) == 1, result.err
    assert result.err.startswith("relaygram: support: unavailable")
    assert result.out == ""


def test_ask_with_the_agent_failing_mid_answer_keeps_the_text_and_exits_1(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers.dify.app.default_script = Script(chunks=ANSWER_CHUNKS, error_after=2)
    write_agents(environment, support=servers.dify_url)

    result = run_cli(capsys, "ask", "hi")

    assert result.code == 1
    assert result.out == "Hello from \n"
    assert len(result.err_lines) == 1, result.err
    assert "fake upstream failure" in result.err


def test_ask_with_a_rejected_key_exits_1(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, default="support_broken", support_broken=servers.dify_url)

    result = run_cli(capsys, "ask", "hi")

    assert result.code == 1
    assert len(result.err_lines) == 1, result.err
    assert "auth" in result.err


def test_config_error_exits_2_with_one_line(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.write_text(
        'default = "support"\n[agents.support]\nplatform = "dify"\n'
        'base_url = "http://127.0.0.1:1/v1"\napi_key = "${NOT_EXPORTED_KEY}"\n',
        encoding="utf-8",
    )

    result = run_cli(capsys, "ask", "hi")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert "NOT_EXPORTED_KEY" in result.err
    assert "agents.support.api_key" in result.err
    assert result.out == ""


def test_missing_agents_file_exits_2_naming_it(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, "check")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert "AGENTS_FILE" in result.err
    assert str(environment) in result.err


def test_bad_environment_exits_2_naming_the_variable(
    environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support="http://127.0.0.1:1/v1")
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("OPERATORS", "12, admin")

    result = run_cli(capsys, "run")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert "OPERATORS" in result.err


# --- check ----------------------------------------------------------------------------------------


def check_lines(result: Outcome) -> dict[str, str]:
    """stdout of `check`, keyed by what was checked ("telegram", "redis", "agent NAME")."""
    lines: dict[str, str] = {}
    for line in result.out.splitlines():
        match = re.match(r"(telegram|redis|agent \S+)[^:]*: (.*)$", line)
        assert match is not None, f"unexpected line: {line!r}"
        lines[match.group(1)] = match.group(2)
    return lines


def test_check_reports_each_part_and_fails_for_a_broken_agent(
    servers: Servers,
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_agents(environment, support=servers.dify_url, support_broken=servers.dify_url)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("TELEGRAM_API_URL", servers.telegram_url)

    result = run_cli(capsys, "check")

    lines = check_lines(result)
    assert lines["telegram"].startswith("ok, @relaygram_test_bot")
    assert lines["redis"].startswith("ok")
    assert lines["agent support"] == "ok, Dify app 'Fake chat app'"
    assert lines["agent support_broken"].startswith("FAILED: auth")
    assert "agent support (default) [dify]: ok" in result.out
    assert result.code == 1
    assert [c.method for c in servers.telegram.calls("getMe")] == ["getMe"]


def test_check_passes_when_everything_is_reachable(
    servers: Servers,
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_agents(environment, support=servers.dify_url)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("TELEGRAM_API_URL", servers.telegram_url + "/")

    result = run_cli(capsys, "check")

    assert result.code == 0, result.out
    assert all(not value.startswith("FAILED") for value in check_lines(result).values())


def test_check_with_a_token_telegram_rejects(
    servers: Servers,
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_agents(environment, support=servers.dify_url)
    monkeypatch.setenv("BOT_TOKEN", "654321:" + WRONG_KEY)
    monkeypatch.setenv("TELEGRAM_API_URL", servers.telegram_url)

    result = run_cli(capsys, "check")

    assert result.code == 1
    assert check_lines(result)["telegram"].startswith("FAILED: Unauthorized")
    assert check_lines(result)["agent support"].startswith("ok")


def test_check_with_telegram_unreachable(
    servers: Servers,
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_agents(environment, support=servers.dify_url)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("TELEGRAM_API_URL", f"http://127.0.0.1:{free_port()}")

    result = run_cli(capsys, "check")

    assert result.code == 1
    assert check_lines(result)["telegram"].startswith("FAILED")


def test_check_without_bot_token_exits_2(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support=servers.dify_url)

    result = run_cli(capsys, "check")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert "BOT_TOKEN" in result.err


# --- run ------------------------------------------------------------------------------------------


def test_run_without_bot_token_exits_2_naming_it(
    servers: Servers, environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_agents(environment, support=servers.dify_url)

    result = run_cli(capsys, "run")

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert "BOT_TOKEN" in result.err
    assert result.out == ""


# --- the installed entry point --------------------------------------------------------------------


def test_python_m_bot_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: relaygram")
    for command in ("run", "check", "ask"):
        assert command in done.stdout


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])

    assert exited.value.code == 2
    assert "usage: relaygram" in capsys.readouterr().err
