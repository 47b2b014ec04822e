"""The configuration contract of DESIGN.md §2: environment / `.env`, and the agents file.

Every problem must surface as one `ConfigError` whose message is a single line naming the
setting, and no message or repr may ever show a secret value.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.config import (
    AgentsConfig,
    ChaindeskAgentConfig,
    ConfigError,
    DifyAgentConfig,
    DifyConsoleAgentConfig,
    OpenAIAgentConfig,
    Settings,
    TimewebAgentConfig,
    load_agents,
    load_settings,
)

SETTINGS_VARIABLES = tuple(name.upper() for name in Settings.model_fields)

BOT_TOKEN = "123456:s3cr3t-bot-token-value"
REDIS_PASSWORD = "s3cr3t-redis-password"
SECRET = "s3cr3t-key-value"

# The example agents file of DESIGN.md §2, verbatim.
DESIGN_EXAMPLE = """\
default = "support"            # the agent a chat gets until an operator switches it

[agents.support]
platform = "dify"              # dify | dify-console | chaindesk | timeweb | openai
title = "Support"              # shown to users and operators
base_url = "https://api.dify.ai/v1"
api_key = "${DIFY_KEY}"

[agents.olares]
platform = "dify-console"      # Dify console API, e.g. Olares: .../api/controllers/console/api
base_url = "https://agent.alice.olares.com/api/controllers/console/api"
app_id = "2c937aae-f4f2-4cf9-b6e2-f2f2756858c0"
headers = { Cookie = "${OLARES_COOKIE}" }   # any platform may add headers

[agents.docs]
platform = "chaindesk"
base_url = "https://api.chaindesk.ai"
agent_id = "clq..."
api_key = "${CHAINDESK_KEY}"   # optional for public agents

[agents.tw]
platform = "timeweb"
base_url = "https://agent.timeweb.cloud"
agent_id = "<access id>"
token = "${TIMEWEB_TOKEN}"     # optional for public agents

[agents.tw-stream]
platform = "openai"
base_url = "https://agent.timeweb.cloud/api/v1/cloud-ai/agents/<access id>/v1"
api_key = "${TIMEWEB_TOKEN}"
model = "agent"
"""

EXAMPLE_ENV = {
    "DIFY_KEY": "s3cr3t-dify-key",
    "OLARES_COOKIE": "session=s3cr3t-olares-cookie",
    "CHAINDESK_KEY": "s3cr3t-chaindesk-key",
    "TIMEWEB_TOKEN": "s3cr3t-timeweb-token",
}

ALL_SECRETS = (BOT_TOKEN, REDIS_PASSWORD, SECRET, *EXAMPLE_ENV.values())


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No relaygram variable from the developer's shell, and a cwd without a `.env`."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_one_clean_line(message: str) -> None:
    assert "\n" not in message, message
    assert "\r" not in message, message
    assert message.strip(), "an error must say something"
    for secret in ALL_SECRETS:
        assert secret not in message, f"secret leaked into: {message}"


def settings_error() -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert_one_clean_line(message)
    return message


def write_agents(directory: Path, text: str) -> Path:
    path = directory / "agents.toml"
    path.write_text(text, encoding="utf-8")
    return path


def agents_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_agents(path, environ if environ is not None else {})
    message = str(caught.value)
    assert_one_clean_line(message)
    return message


DIFY_TABLE = """\
default = "support"

[agents.support]
platform = "dify"
base_url = "https://api.dify.ai/v1"
api_key = "plain-key"
"""


# --- environment ---------------------------------------------------------------------------------


def test_defaults_without_any_variable() -> None:
    settings = load_settings()

    assert settings.bot_token is None
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.redis_url is None
    assert settings.agents_file == Path("agents.toml")
    assert settings.operators == frozenset()
    assert settings.log_level == "INFO"


def test_operators_are_comma_separated_ids_with_spaces_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATORS", "1, 2,3")

    assert load_settings().operators == frozenset({1, 2, 3})


def test_operators_tolerate_empty_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATORS", "42, ,7,")

    assert load_settings().operators == frozenset({42, 7})


@pytest.mark.parametrize("value", ["1, two, 3", "@alice", "1;2"])
def test_a_bad_operator_id_is_one_line_naming_operators(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("OPERATORS", value)

    message = settings_error()

    assert message.startswith("OPERATORS")
    assert "comma-separated" in message


@pytest.mark.parametrize("variable", ["ALLOWED_USERS", "ALLOWED_CHATS"])
def test_allowlists_are_id_lists_too(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "-1001234, 5 ,")
    assert getattr(load_settings(), variable.lower()) == frozenset({-1001234, 5})

    monkeypatch.setenv(variable, "5, @group")
    assert settings_error().startswith(variable)


def test_telegram_api_url_without_scheme_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEGRAM_API_URL", "api.telegram.org")

    message = settings_error()

    assert message.startswith("TELEGRAM_API_URL")
    assert "http://" in message


def test_bad_value_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A self-hosted Bot API server behind basic auth, written without its scheme.
    monkeypatch.setenv("TELEGRAM_API_URL", f"bot:{SECRET}@botapi.internal:8081")

    assert settings_error().startswith("TELEGRAM_API_URL")


def test_telegram_api_url_trailing_slash_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_API_URL", "http://127.0.0.1:8081/")

    assert load_settings().telegram_api_url == "http://127.0.0.1:8081"


def test_log_level_is_case_insensitive_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"

    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert settings_error().startswith("LOG_LEVEL")


def test_dotenv_file_in_the_working_directory_is_read(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        f"BOT_TOKEN={BOT_TOKEN}\nOPERATORS=5,6\nAGENTS_FILE=conf/bots.toml\n"
        "UNRELATED_VARIABLE=ignored\n",
        encoding="utf-8",
    )

    settings = load_settings()

    assert settings.require_bot_token().get_secret_value() == BOT_TOKEN
    assert settings.operators == frozenset({5, 6})
    assert settings.agents_file == Path("conf/bots.toml")


def test_environment_wins_over_dotenv(
    monkeypatch: pytest.MonkeyPatch, clean_environment: Path
) -> None:
    (clean_environment / ".env").write_text("OPERATORS=5\nLOG_LEVEL=ERROR\n", encoding="utf-8")
    monkeypatch.setenv("OPERATORS", "7")

    settings = load_settings()

    assert settings.operators == frozenset({7})
    assert settings.log_level == "ERROR"


def test_dotenv_can_be_switched_off(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(f"BOT_TOKEN={BOT_TOKEN}\n", encoding="utf-8")

    assert load_settings(env_file=None).bot_token is None


def test_error_from_dotenv_names_the_setting_and_hides_the_token(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        f"BOT_TOKEN={BOT_TOKEN}\nHTTP_PORT=eighty\n", encoding="utf-8"
    )

    assert settings_error().startswith("HTTP_PORT")


def test_secrets_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("REDIS_URL", f"redis://:{REDIS_PASSWORD}@redis:6379/0")
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)

    settings = load_settings()
    shown = f"{settings!r} {settings}"

    for secret in (BOT_TOKEN, REDIS_PASSWORD, SECRET):
        assert secret not in shown
    assert settings.redis_url is not None
    assert REDIS_PASSWORD in settings.redis_url.get_secret_value()


@pytest.mark.parametrize("token", [None, "", "   "])
def test_require_bot_token_names_the_variable(token: str | None) -> None:
    settings = Settings(_env_file=None, bot_token=None if token is None else SecretStr(token))

    with pytest.raises(ConfigError) as caught:
        settings.require_bot_token()

    message = str(caught.value)
    assert_one_clean_line(message)
    assert message.startswith("BOT_TOKEN")
    assert "@BotFather" in message


def test_require_bot_token_returns_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)

    assert load_settings().require_bot_token().get_secret_value() == BOT_TOKEN


# --- the agents file: the documented example ------------------------------------------------------


def test_every_platform_of_the_design_example_parses(tmp_path: Path) -> None:
    config = load_agents(write_agents(tmp_path, DESIGN_EXAMPLE), EXAMPLE_ENV)

    assert config.default == "support"
    assert list(config.agents) == ["support", "olares", "docs", "tw", "tw-stream"]

    support = config.agents["support"]
    assert isinstance(support, DifyAgentConfig)
    assert support.title == "Support"
    assert support.api_key.get_secret_value() == EXAMPLE_ENV["DIFY_KEY"]

    olares = config.agents["olares"]
    assert isinstance(olares, DifyConsoleAgentConfig)
    assert olares.title == "olares", "the title defaults to the agent's name"
    assert olares.app_id == "2c937aae-f4f2-4cf9-b6e2-f2f2756858c0"
    assert olares.headers["Cookie"].get_secret_value() == EXAMPLE_ENV["OLARES_COOKIE"]

    docs = config.agents["docs"]
    assert isinstance(docs, ChaindeskAgentConfig)
    assert docs.agent_id == "clq..."
    assert docs.api_key is not None
    assert docs.api_key.get_secret_value() == EXAMPLE_ENV["CHAINDESK_KEY"]

    tw = config.agents["tw"]
    assert isinstance(tw, TimewebAgentConfig)
    assert tw.agent_id == "<access id>"
    assert tw.token is not None
    assert tw.token.get_secret_value() == EXAMPLE_ENV["TIMEWEB_TOKEN"]

    stream = config.agents["tw-stream"]
    assert isinstance(stream, OpenAIAgentConfig)
    assert stream.model == "agent"
    assert stream.base_url.endswith("/agents/<access id>/v1")


def test_example_secrets_are_hidden_in_repr_but_known_to_the_log_filter(tmp_path: Path) -> None:
    config = load_agents(write_agents(tmp_path, DESIGN_EXAMPLE), EXAMPLE_ENV)

    shown = f"{config!r} {config}"
    for name, value in EXAMPLE_ENV.items():
        assert value not in shown, f"{name} is visible in the config's repr"
    assert set(config.secrets()) == set(EXAMPLE_ENV.values())


def test_environment_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)

    config = load_agents(write_agents(tmp_path, DESIGN_EXAMPLE))

    assert isinstance(config, AgentsConfig)
    assert set(config.secrets()) == set(EXAMPLE_ENV.values())


def test_public_agents_need_no_key(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        """\
default = "docs"

[agents.docs]
platform = "chaindesk"
base_url = "https://api.chaindesk.ai/"
agent_id = "clq"

[agents.tw]
platform = "timeweb"
base_url = "https://agent.timeweb.cloud"
agent_id = "abc"
""",
    )

    config = load_agents(path, {})

    assert config.agents["docs"].base_url == "https://api.chaindesk.ai"
    assert config.secrets() == []


# --- `${ENV}` references --------------------------------------------------------------------------


def test_whole_and_embedded_env_references_are_substituted(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        """\
default = "support"

[agents.support]
platform = "dify"
base_url = "https://${DIFY_HOST}/v1"
api_key = "${KEY}"
headers = { Authorization = "Bearer ${T}", X-Static = "pa$$word ${ not a reference" }
""",
    )

    config = load_agents(path, {"KEY": SECRET, "T": "t0ken-value", "DIFY_HOST": "dify.example"})

    support = config.agents["support"]
    assert isinstance(support, DifyAgentConfig)
    assert support.base_url == "https://dify.example/v1"
    assert support.api_key.get_secret_value() == SECRET
    assert support.headers["Authorization"].get_secret_value() == "Bearer t0ken-value"
    assert support.headers["X-Static"].get_secret_value() == "pa$$word ${ not a reference"
    assert SECRET not in repr(config)
    assert "t0ken-value" not in repr(config)


def test_missing_env_variable_names_it_and_the_setting(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        """\
default = "support"

[agents.support]
platform = "dify"
base_url = "https://api.dify.ai/v1"
api_key = "${PRESENT_KEY}"
headers = { Authorization = "Bearer ${MISSING_TOKEN}" }
""",
    )

    message = agents_error(path, {"PRESENT_KEY": SECRET})

    assert "MISSING_TOKEN" in message
    assert "agents.support.headers.Authorization" in message
    assert str(path) in message


def test_missing_env_variable_in_a_top_level_key(tmp_path: Path) -> None:
    path = write_agents(tmp_path, DIFY_TABLE.replace('default = "support"', 'default = "${DEF}"'))

    message = agents_error(path)

    assert "DEF" in message
    assert "default" in message


# --- agents file errors ---------------------------------------------------------------------------


def test_missing_file_names_agents_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "agents.toml"

    message = agents_error(missing)

    assert message.startswith("AGENTS_FILE")
    assert str(missing) in message


def test_invalid_toml_is_one_line_with_the_position(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        f'default = "support"\n[agents.support\napi_key = "{SECRET}"\n',
    )

    message = agents_error(path)

    assert str(path) in message
    assert "TOML" in message
    assert "line 2" in message


def test_unknown_platform_lists_the_supported_ones(tmp_path: Path) -> None:
    path = write_agents(tmp_path, DIFY_TABLE.replace('"dify"', '"flowise"'))

    message = agents_error(path)

    assert "agents.support" in message
    for platform in ("dify", "dify-console", "chaindesk", "timeweb", "openai"):
        assert platform in message


def test_missing_platform_says_so(tmp_path: Path) -> None:
    path = write_agents(tmp_path, DIFY_TABLE.replace('platform = "dify"\n', ""))

    message = agents_error(path)

    assert "agents.support" in message
    assert "platform is missing" in message


def test_missing_required_key_names_its_path(tmp_path: Path) -> None:
    path = write_agents(tmp_path, DIFY_TABLE.replace('api_key = "plain-key"\n', ""))

    message = agents_error(path)

    assert "agents.support.api_key" in message
    assert "required" in message.lower()


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    path = write_agents(tmp_path, DIFY_TABLE + 'temprature = "${T}"\n')

    message = agents_error(path, {"T": SECRET})

    assert "agents.support.temprature" in message
    assert "unknown setting" in message


def test_wrongly_typed_value_from_env_does_not_echo_it(tmp_path: Path) -> None:
    path = write_agents(
        tmp_path,
        DIFY_TABLE.replace('"https://api.dify.ai/v1"', '"${URL}"'),
    )

    message = agents_error(path, {"URL": f"ftp://{SECRET}@host"})

    assert "agents.support.base_url" in message


def test_default_must_be_one_of_the_agents(tmp_path: Path) -> None:
    path = write_agents(tmp_path, DIFY_TABLE.replace('default = "support"', 'default = "sales"'))

    message = agents_error(path)

    assert "'sales'" in message
    assert "default" in message


def test_no_agents_at_all(tmp_path: Path) -> None:
    path = write_agents(tmp_path, 'default = "support"\n[agents]\n')

    message = agents_error(path)

    assert "no agents" in message


@pytest.mark.parametrize("name", ["has space", "-leading-dash", "x" * 33, "émoji"])
def test_bad_agent_name_is_rejected(tmp_path: Path, name: str) -> None:
    text = DIFY_TABLE.replace("support", name).replace(f"[agents.{name}]", f'[agents."{name}"]')
    path = write_agents(tmp_path, text)

    message = agents_error(path)

    assert "agent name" in message
    assert repr(name) in message


def test_good_agent_names(tmp_path: Path) -> None:
    name = "a" + "b" * 31  # 32 characters, the maximum
    text = (
        DIFY_TABLE.replace("support", name)
        + '\n[agents."v2.sales_EU-1"]\nplatform = "dify"\n'
        + 'base_url = "http://10.0.0.1/v1"\napi_key = "k"\n'
    )

    config = load_agents(write_agents(tmp_path, text), {})

    assert sorted(config.agents) == sorted([name, "v2.sales_EU-1"])
