"""Which agent serves a chat (or forum topic): an operator's choice, else the default."""

from __future__ import annotations

import logging

from bot.agents.registry import AgentDirectory
from storage import ChatPrefsStore, ChatScope

logger = logging.getLogger("relaygram.routing")


class AgentRouting:
    def __init__(self, agents: AgentDirectory, prefs: ChatPrefsStore) -> None:
        self._agents = agents
        self._prefs = prefs

    async def current(self, scope: ChatScope) -> str:
        chosen = (await self._prefs.get(scope)).agent
        if chosen is not None:
            if self._agents.get(chosen) is not None:
                return chosen
            # The agents file no longer has it (reloaded): the chat falls back to the default.
            logger.info("agent %r chosen for %s is gone; using the default", chosen, scope.key)
        return self._agents.default

    async def choose(self, scope: ChatScope, name: str) -> None:
        # The default is stored as "no choice", so a later change of default applies here too.
        await self._prefs.set_agent(scope, None if name == self._agents.default else name)
