"""Settings from the environment (and `.env`), and the agents file (TOML with `${ENV}` references).

This is the user-facing configuration contract of DESIGN.md §2. Every problem becomes one
`ConfigError` whose message is a single line naming the setting; secrets are `SecretStr` and
are never part of a message.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AGENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration problem, described in one line that names the setting."""


# --- environment ---------------------------------------------------------------------------------


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    redis_url: SecretStr | None = None
    agents_file: Path = Path("agents.toml")
    operators: Annotated[frozenset[int], NoDecode] = frozenset()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # How answers grow: drafts in private chats where the Bot API server takes them (auto),
    # always try drafts (draft), or always send + edit (edit).
    stream_mode: Literal["auto", "draft", "edit"] = "auto"
    # The bot-wide Telegram budget, shared by every process of the bot through Redis.
    bot_requests_per_second: float = Field(default=30.0, gt=0, le=1000)
    # Access and abuse: empty allowlists mean everyone; 0 disables the rate limit.
    allowed_users: Annotated[frozenset[int], NoDecode] = frozenset()
    allowed_chats: Annotated[frozenset[int], NoDecode] = frozenset()
    rate_limit_per_minute: int = Field(default=20, ge=0)
    max_message_length: int = Field(default=4000, ge=1)

    # Planned production settings (DESIGN.md §2); accepted now so deployments can set them.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    replica_id: str | None = None

    @field_validator("operators", "allowed_users", "allowed_chats", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                return frozenset(int(p) for p in parts)
            except ValueError:
                raise ValueError("must be comma-separated Telegram ids") from None
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("log_level", "stream_mode", mode="before")
    @classmethod
    def _normalise_case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    def require_bot_token(self) -> SecretStr:
        if self.bot_token is None or not self.bot_token.get_secret_value().strip():
            raise ConfigError("BOT_TOKEN is not set (the token from @BotFather)")
        return self.bot_token


def load_settings(env_file: str | None = ".env") -> Settings:
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        raise ConfigError(_describe_env_error(exc)) from None


def _describe_env_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]).upper() if error["loc"] else "settings"
    return f"{name}: {str(error['msg']).removeprefix('Value error, ')}"


# --- agents file ---------------------------------------------------------------------------------


class _AgentBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""  # filled from the table key
    title: str = ""  # defaults to the name
    base_url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    # Seconds without a byte from the agent before giving up. Not a time-to-headers limit:
    # Dify sends headers only with its first event, which can take many seconds.
    silence_timeout: float = Field(default=90.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def secrets(self) -> list[str]:
        """Every secret value of this agent, for the log redaction filter."""
        values = [v.get_secret_value() for v in self.headers.values()]
        for field_value in self.__dict__.values():
            if isinstance(field_value, SecretStr):
                values.append(field_value.get_secret_value())
        return [v for v in values if v]


class DifyAgentConfig(_AgentBase):
    platform: Literal["dify"]
    api_key: SecretStr
    inputs: dict[str, Any] = Field(default_factory=dict)
    suggestions: bool = True


class DifyConsoleAgentConfig(_AgentBase):
    platform: Literal["dify-console"]
    app_id: str
    api_key: SecretStr | None = None  # a console token, when not behind a gateway that adds one
    inputs: dict[str, Any] = Field(default_factory=dict)
    suggestions: bool = True


class ChaindeskAgentConfig(_AgentBase):
    platform: Literal["chaindesk"]
    agent_id: str
    api_key: SecretStr | None = None
    temperature: float | None = None
    modelName: str | None = None
    maxTokens: int | None = None
    topP: float | None = None
    presencePenalty: float | None = None
    frequencyPenalty: float | None = None
    filters: dict[str, list[str]] | None = None
    systemPrompt: str | None = None
    userPrompt: str | None = None
    promptType: Literal["raw", "customer_support"] | None = None
    promptTemplate: str | None = None


class TimewebAgentConfig(_AgentBase):
    platform: Literal["timeweb"]
    agent_id: str
    token: SecretStr | None = None
    proxy_source: str = "relaygram"


class OpenAIAgentConfig(_AgentBase):
    platform: Literal["openai"]
    api_key: SecretStr | None = None
    model: str = "agent"
    system_prompt: str | None = None
    max_history_turns: int = Field(default=20, ge=0)
    max_history_chars: int = Field(default=24000, ge=0)


AgentConfig = Annotated[
    DifyAgentConfig
    | DifyConsoleAgentConfig
    | ChaindeskAgentConfig
    | TimewebAgentConfig
    | OpenAIAgentConfig,
    Field(discriminator="platform"),
]


class AgentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    agents: dict[str, AgentConfig]
    # Every value read from the environment through ${NAME}: secret wherever it appears
    # (a key inside a base_url's query string is as secret as an api_key).
    _environment_values: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _check(self) -> AgentsConfig:
        if not self.agents:
            raise ValueError("no agents are configured (add an [agents.NAME] table)")
        for name in self.agents:
            if not re.match(AGENT_NAME_PATTERN, name):
                raise ValueError(
                    f"agent name {name!r} must be 1-32 letters, digits, '_', '-' or '.'"
                )
        if self.default not in self.agents:
            raise ValueError(f"default agent {self.default!r} is not defined under [agents]")
        return self

    def secrets(self) -> list[str]:
        values = {s for agent in self.agents.values() for s in agent.secrets()}
        return sorted(values | self._environment_values)


def load_agents(path: Path, environ: Mapping[str, str] | None = None) -> AgentsConfig:
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"AGENTS_FILE: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"AGENTS_FILE: cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_agents(raw, env, source=str(path))


def parse_agents(
    raw: dict[str, Any], environ: Mapping[str, str], *, source: str = "agents file"
) -> AgentsConfig:
    substituted: set[str] = set()
    resolved = _resolve_env(raw, environ, source, (), substituted)
    agents = resolved.get("agents")
    if isinstance(agents, dict):
        for name, table in agents.items():
            if isinstance(table, dict):
                table.setdefault("name", name)
                if not table.get("title"):
                    table["title"] = name
    try:
        config = AgentsConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe_agents_error(exc)}") from None
    config._environment_values = frozenset(v for v in substituted if v)
    return config


def _resolve_env(
    value: Any,
    environ: Mapping[str, str],
    source: str,
    path: tuple[str, ...],
    substituted: set[str],
) -> Any:
    if isinstance(value, dict):
        return {
            k: _resolve_env(v, environ, source, (*path, str(k)), substituted)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env(v, environ, source, path, substituted) for v in value]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                where = ".".join(path)
                raise ConfigError(
                    f"{source}: {where} refers to ${{{name}}}, "
                    f"but the environment variable {name} is not set"
                )
            substituted.add(environ[name])
            return environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    return value


def _describe_agents_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    # Drop the discriminator tag pydantic inserts into the location (agents.x.dify.api_key).
    loc = [str(p) for p in error["loc"]]
    if len(loc) >= 3 and loc[0] == "agents" and loc[2] in _PLATFORMS:
        loc = loc[:2] + loc[3:]
    where = ".".join(loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":
        message = f"platform must be one of {', '.join(sorted(_PLATFORMS))}"
    elif error["type"] == "union_tag_not_found":
        message = f"platform is missing (one of {', '.join(sorted(_PLATFORMS))})"
    elif error["type"] == "extra_forbidden":
        message = "unknown setting"
    return f"{where}: {message}" if where else message


_PLATFORMS = {"dify", "dify-console", "chaindesk", "timeweb", "openai"}
