"""`RedactSecrets`: whatever a library logs, a secret never reaches the log output."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.logs import REDACTED, RedactSecrets

TOKEN = "123456:s3cr3t-bot-token"
API_KEY = "app-s3cr3t-key-value"


class Capture:
    """A logger with one handler that formats into a string, like the bot's stderr handler."""

    def __init__(self, secrets: list[str]) -> None:
        self.stream = io.StringIO()
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactSecrets(secrets))
        self.handler = handler
        self.logger = logging.getLogger(f"relaygram.test-logs.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(handler)

    @property
    def output(self) -> str:
        return self.stream.getvalue()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def capture() -> Iterator[Capture]:
    log = Capture([TOKEN, API_KEY])
    yield log
    log.close()


def test_secret_in_the_message_is_replaced(capture: Capture) -> None:
    capture.logger.warning(f"GET https://api.telegram.org/bot{TOKEN}/getMe failed")

    assert TOKEN not in capture.output
    assert f"/bot{REDACTED}/getMe failed" in capture.output


def test_secret_in_the_arguments_is_replaced(capture: Capture) -> None:
    capture.logger.info("calling %s with key %r (attempt %d)", "dify", API_KEY, 2)

    assert API_KEY not in capture.output
    assert f"calling dify with key '{REDACTED}' (attempt 2)" in capture.output


def test_secret_inside_an_exception_traceback_is_replaced(capture: Capture) -> None:
    def fail() -> None:
        raise RuntimeError(f"Authorization: Bearer {API_KEY} rejected for bot{TOKEN}")

    try:
        fail()
    except RuntimeError:
        capture.logger.exception("agent request failed")

    output = capture.output
    assert API_KEY not in output
    assert TOKEN not in output
    assert "Traceback (most recent call last)" in output, "the traceback itself is kept"
    assert f"RuntimeError: Authorization: Bearer {REDACTED} rejected" in output
    assert "agent request failed" in output


def test_a_secret_containing_another_is_replaced_whole() -> None:
    log = Capture(["s3cr3t", "s3cr3t-and-more"])
    try:
        log.logger.error("value=s3cr3t-and-more; short=s3cr3t")
    finally:
        log.close()

    assert log.output.strip().endswith(f"value={REDACTED}; short={REDACTED}")


def test_short_strings_are_not_treated_as_secrets() -> None:
    log = Capture(["abc", "", "x", API_KEY])
    try:
        log.logger.info("abc x: a normal line with key %s", API_KEY)
    finally:
        log.close()

    assert f"abc x: a normal line with key {REDACTED}" in log.output


def test_records_without_secrets_are_emitted_unchanged(capture: Capture) -> None:
    capture.logger.info("answer %d in chat %s took %.1fs", 7, -100123, 1.25)

    expected = f"INFO {capture.logger.name}: answer 7 in chat -100123 took 1.2s\n"
    assert capture.output == expected


def test_every_record_is_still_emitted(capture: Capture) -> None:
    capture.logger.debug("one %s", TOKEN)
    capture.logger.warning("two")
    try:
        raise ValueError(API_KEY)
    except ValueError:
        capture.logger.exception("three")

    lines = [line for line in capture.output.splitlines() if line.startswith(("DEBUG", "WARN"))]
    assert lines[:2] == [
        f"DEBUG {capture.logger.name}: one {REDACTED}",
        f"WARNING {capture.logger.name}: two",
    ]
    assert f"ERROR {capture.logger.name}: three" in capture.output
    assert f"ValueError: {REDACTED}" in capture.output


def test_without_secrets_nothing_is_touched() -> None:
    log = Capture([])
    try:
        log.logger.info("100%% done with %s", "ok")
    finally:
        log.close()

    assert log.output.endswith(": 100% done with ok\n")
