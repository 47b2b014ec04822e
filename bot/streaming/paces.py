"""How often the bot may write to one chat: Telegram's per-chat limits, as the bot keeps them.

- A private chat takes about one call per second with short bursts: a token bucket (`Bucket`).
- A group takes 20 calls in any minute: a rolling window (`Window`). A growing answer's
  intermediate states are spread evenly over it (one per `seconds / calls`), so the group sees
  the answer grow all minute long instead of 20 quick updates and then a silence. What the
  user waits for — an answer's first text, its final state, a notice — goes out as soon as
  the window has room.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol


class ChatPace(Protocol):
    """One chat's pace, as state."""

    def ready_at(self, now: float, urgent: bool) -> float:
        """The earliest time a call may go (now, if it may go now).

        The answer holds until the next `spend` or `restart`, whatever time it is asked at
        later (the scheduler keeps it), and an urgent call is never later than an update.
        """
        ...

    def spend(self, now: float) -> None:
        """A call was granted at `now`."""
        ...

    def restart(self, at: float) -> None:
        """A 429 window ends at `at` (the scheduler holds the chat until then): leave no
        catch-up burst for after it, since Telegram lengthens the penalty of a bot that
        bursts again."""
        ...

    def rested(self, now: float) -> bool:
        """Whether the chat is back to the state of one never written to (may be forgotten)."""
        ...


class PaceRule(Protocol):
    def start(self, now: float) -> ChatPace:
        """The pace of a chat first written to at `now`."""
        ...


@dataclass(frozen=True, slots=True)
class Bucket:
    per_second: float
    burst: float

    def start(self, now: float) -> ChatPace:
        return _TokenBucket(self, now)


@dataclass(frozen=True, slots=True)
class Window:
    calls: int
    seconds: float

    @property
    def spacing(self) -> float:
        return self.seconds / self.calls

    def start(self, now: float) -> ChatPace:
        return _RollingWindow(self)


class _TokenBucket:
    __slots__ = ("_rule", "_tokens", "_updated")

    def __init__(self, rule: Bucket, now: float) -> None:
        self._rule = rule
        self._tokens = rule.burst
        self._updated = now

    def ready_at(self, now: float, urgent: bool) -> float:
        self._refill(now)
        if self._tokens >= 1.0:
            return now
        return now + (1.0 - self._tokens) / self._rule.per_second

    def spend(self, now: float) -> None:
        self._refill(now)
        self._tokens -= 1.0

    def restart(self, at: float) -> None:
        self._tokens, self._updated = 1.0, at

    def rested(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= self._rule.burst

    def _refill(self, now: float) -> None:
        if now > self._updated:
            gained = (now - self._updated) * self._rule.per_second
            self._tokens = min(self._rule.burst, self._tokens + gained)
            self._updated = now


class _RollingWindow:
    __slots__ = ("_rule", "_times")

    def __init__(self, rule: Window) -> None:
        self._rule = rule
        # A list, not a deque: a deque allocates a 64-slot block up front (~760 bytes in all),
        # for at most `calls` times; every group chat has one.
        self._times: list[float] = []

    def ready_at(self, now: float, urgent: bool) -> float:
        self._forget(now)
        at = now
        if len(self._times) >= self._rule.calls:
            at = self._times[-self._rule.calls] + self._rule.seconds
        if not urgent and self._times:
            at = max(at, self._times[-1] + self._rule.spacing)
        return at

    def spend(self, now: float) -> None:
        self._times.append(now)

    def restart(self, at: float) -> None:
        # The calls of the last minute still count, whatever the 429 was for (often the
        # bot-wide limit): the window keeps them, and the scheduler holds the chat until `at`.
        return None

    def rested(self, now: float) -> bool:
        self._forget(now)
        return not self._times

    def _forget(self, now: float) -> None:
        # Times are appended in order, so the expired ones are a prefix.
        expired = bisect.bisect_right(self._times, now - self._rule.seconds)
        if expired:
            del self._times[:expired]


class Unpaced:
    """No per-chat limit: for the calls aimed at no chat (the commands menu, a button's answer,
    `getMe`), which only the bot-wide budget limits."""

    def start(self, now: float) -> ChatPace:
        return _NoPace()


class _NoPace:
    __slots__ = ()

    def ready_at(self, now: float, urgent: bool) -> float:
        return now

    def spend(self, now: float) -> None:
        return None

    def restart(self, at: float) -> None:
        return None

    def rested(self, now: float) -> bool:
        return True


# 1/s with a burst of 2 lets the typing action and the first text go out back to back.
PRIVATE_CHAT = Bucket(per_second=1.0, burst=2.0)
# Telegram's 20 per minute, counted over 61 s: a second of margin for network jitter.
GROUP_CHAT = Window(calls=20, seconds=61.0)
