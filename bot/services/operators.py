"""What operators do: see and switch the agent serving a chat, read statistics, reload the
agents file, choose how the bot listens in a group. Who is an operator is `Settings.operators`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from bot.agents.base import AgentError, SupportsStatistics
from bot.agents.registry import AgentDirectory
from bot.config import AgentsConfig, ConfigError
from bot.services.routing import AgentRouting
from storage import AgentStats, ChatScope, Storage

logger = logging.getLogger("relaygram.operators")

AgentsLoader = Callable[[], AgentsConfig]


@dataclass(frozen=True, slots=True)
class AgentListing:
    name: str
    title: str
    platform: str
    serves_here: bool
    is_default: bool


class SwitchOutcome(Enum):
    SWITCHED = "switched"
    ALREADY = "already"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SwitchResult:
    outcome: SwitchOutcome
    title: str  # the agent's title (the name as given when unknown)
    known: tuple[str, ...]  # every agent's name, for "did you mean"


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    detail: str  # the agents now configured, or why the file was rejected


@dataclass(frozen=True, slots=True)
class AgentReport:
    name: str
    title: str
    stats: AgentStats
    platform_stats: dict[str, list[dict[str, Any]]] | None = None
    platform_error: str | None = None


class OperatorService:
    def __init__(
        self,
        *,
        agents: AgentDirectory,
        routing: AgentRouting,
        storage: Storage,
        operators: frozenset[int],
        load_agents: AgentsLoader,
    ) -> None:
        self._agents = agents
        self._routing = routing
        self._storage = storage
        self.operators = operators
        self._load_agents = load_agents

    def is_operator(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.operators

    async def list_agents(self, scope: ChatScope) -> list[AgentListing]:
        current = await self._routing.current(scope)
        return [
            AgentListing(
                name=client.name,
                title=client.title,
                platform=client.platform,
                serves_here=client.name == current,
                is_default=client.name == self._agents.default,
            )
            for client in self._agents
        ]

    async def switch(self, scope: ChatScope, name: str) -> SwitchResult:
        """Let `name` serve this chat (or topic). Each agent keeps its own conversation here,
        so switching back continues where that agent left off."""
        known = tuple(self._agents.names())
        client = self._agents.get(name)
        if client is None:
            return SwitchResult(SwitchOutcome.UNKNOWN, name, known)
        if await self._routing.current(scope) == name:
            return SwitchResult(SwitchOutcome.ALREADY, client.title, known)
        await self._routing.choose(scope, name)
        logger.info("chat %s now served by agent %s", scope.key, name)
        return SwitchResult(SwitchOutcome.SWITCHED, client.title, known)

    async def set_mode(self, scope: ChatScope, mode: str) -> None:
        await self._storage.chat_prefs.set_mode(scope, None if mode == "mention" else mode)

    def reload(self) -> ReloadResult:
        """Read the agents file again. A broken file is rejected; the old one keeps running."""
        try:
            config = self._load_agents()
            self._agents.replace(config)
        except ConfigError as exc:
            logger.warning("agents file rejected on reload: %s", exc)
            return ReloadResult(False, str(exc))
        logger.info("agents file reloaded: %s", ", ".join(config.agents))
        return ReloadResult(True, ", ".join(config.agents))

    async def report(self, bot_id: int, window: timedelta) -> list[AgentReport]:
        until = time.time()
        since = until - window.total_seconds()
        reports = []
        for client in self._agents:
            stats = await self._storage.stats.summary(bot_id, client.name, since=since, until=until)
            platform_stats, error = None, None
            if isinstance(client, SupportsStatistics):
                end = datetime.now()
                try:
                    platform_stats = await client.statistics(end - window, end)
                except AgentError as exc:
                    error = exc.kind
            reports.append(AgentReport(client.name, client.title, stats, platform_stats, error))
        return reports
