"""Agent name -> a ready client; platform name -> the adapter that speaks it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import httpx

from bot.agents.base import AgentClient
from bot.agents.chaindesk import ChaindeskClient
from bot.agents.dify import DifyClient
from bot.agents.dify_console import DifyConsoleClient
from bot.agents.openai import OpenAIClient
from bot.agents.timeweb import TimewebClient
from bot.config import AgentConfig, AgentsConfig, ConfigError

AdapterFactory = Callable[[Any, httpx.AsyncClient], AgentClient]

ADAPTERS: Mapping[str, AdapterFactory] = MappingProxyType(
    {
        "chaindesk": ChaindeskClient,
        "dify": DifyClient,
        "dify-console": DifyConsoleClient,
        "timeweb": TimewebClient,
        "openai": OpenAIClient,
    }
)


def build_client(config: AgentConfig, http: httpx.AsyncClient) -> AgentClient:
    factory = ADAPTERS.get(config.platform)
    if factory is None:
        supported = ", ".join(sorted(ADAPTERS))
        raise ConfigError(
            f"agents.{config.name}.platform: {config.platform!r} is not supported by this "
            f"version of relaygram (supported: {supported})"
        )
    return factory(config, http)


class AgentDirectory:
    """The configured agents, each with its client. `replace` swaps in a reloaded agents file:
    answers already running keep the client they started with."""

    def __init__(self, config: AgentsConfig, http: httpx.AsyncClient) -> None:
        self._http = http
        self.config = config
        self._clients = self._build(config)

    def _build(self, config: AgentsConfig) -> dict[str, AgentClient]:
        return {name: build_client(cfg, self._http) for name, cfg in config.agents.items()}

    def replace(self, config: AgentsConfig) -> None:
        """Use a new agents file. Raises ConfigError (and changes nothing) if it cannot be used."""
        clients = self._build(config)
        self.config, self._clients = config, clients

    def names(self) -> list[str]:
        return list(self._clients)

    @property
    def default(self) -> str:
        return self.config.default

    def get(self, name: str) -> AgentClient | None:
        return self._clients.get(name)

    def __iter__(self) -> Iterator[AgentClient]:
        return iter(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)
