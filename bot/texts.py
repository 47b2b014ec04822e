"""Every text a user can see, in one place, marked for translation (gettext, domain "relaygram").

Constants are lazy (`__`, aiogram's `lazy_gettext`): each use translates them into the locale of
the update being handled (set by `bot.i18n.ChatLanguageMiddleware`), so they must never be turned
into `str` at import time. `.format(...)` on one returns a plain `str` in that locale; where a
call needs the text itself (a message, a toast, a button), pass `str(texts.X)`. The catalogs are
in bot/locales (see `bot.i18n` for extracting and compiling them).

Error texts are chosen by the error's kind, never built from the platform's message: platform
messages can be technical, misleading ("Dify Hosted OpenAI …") or contain internal details.
"""

from __future__ import annotations

from aiogram.utils.i18n import lazy_gettext as __
from babel.support import LazyProxy

from bot.agents.base import AgentError, FinishReason

# Translators: {agent} is the agent's title, e.g. "Support".
GREETING = __(
    "Hi! I'm a bot that lets you talk to {agent}.\n\n"
    "Just send me a message. /reset starts a new conversation, /stop stops an answer, "
    "and /help shows everything I can do."
)

HELP = __(
    "Send a text message and {agent} answers it here; the reply grows as it is written.\n\n"
    "/reset — start a new conversation (alias /new)\n"
    "/stop — stop the answer being written\n"
    "/lang — choose the language\n"
    "/help — this help\n\n"
    "Rate answers with 👍 / 👎 under them; pressing your choice again takes it back."
)
# Translators: stands for {agent} when the chat's agent is no longer configured.
AGENT_FALLBACK_TITLE = __("the agent")

# The command menus (setMyCommands), registered once per language.
COMMAND_DESCRIPTIONS: dict[str, LazyProxy] = {
    "start": __("Start and show the greeting"),
    "help": __("What this bot can do"),
    "reset": __("Start a new conversation"),
    "stop": __("Stop the answer being written"),
    "lang": __("Change the language"),
}
GROUP_COMMAND_DESCRIPTIONS: dict[str, LazyProxy] = {
    "help": __("What this bot can do"),
    "reset": __("Start a new conversation in this chat"),
    "stop": __("Stop the answer being written"),
    "lang": __("Change the language in this chat"),
}
OPERATOR_COMMAND_DESCRIPTIONS: dict[str, LazyProxy] = {
    "agents": __("List the agents"),
    "agent": __("Switch the agent serving a chat"),
    "stats": __("Answers, ratings and timings per agent"),
    "reload": __("Reload the agents file"),
    "mode": __("In a group: answer mentions only, or all messages"),
}

OPERATORS_ONLY = __("This command is for the bot's operators.")
NOT_ALLOWED = __("Sorry, this bot is private. Ask its operator for access.")
RATE_LIMITED = __(
    "You are writing faster than I can answer. Please wait {seconds} s and try again."
)
TOO_LONG = __(
    "Your message is {length} characters long; the limit is {limit}. Please shorten it or "
    "split it into parts."
)
STOP_NOT_YOURS = __("Only the person who asked (or a chat admin) can stop this answer.")
AGENTS_HEADER = __("Agents (▶ serves this chat):")
# Translators: one line of /agents: {marker} is ▶ or •, {name} the agent's key, {title} its
# title, {platform} e.g. "dify", {default} the "(default)" mark or nothing.
AGENT_LINE = __("{marker} {name} — {title} [{platform}]{default}")
AGENT_DEFAULT_MARK = __(" (default)")
AGENT_PICK = __("Which agent should serve this chat? Now: {current}.")
AGENT_SWITCHED = __("✅ {title} now serves this chat. Its earlier conversation here continues.")
AGENT_ALREADY = __("{title} already serves this chat.")
# Translators: {known} is a comma-separated list of agent names.
AGENT_UNKNOWN = __("There is no agent called {name}. Known: {known}.")
# Translators: {agents} is a comma-separated list of agent names.
RELOADED = __("✅ Agents file reloaded: {agents}.")
RELOAD_FAILED = __(
    "❌ The agents file was rejected; the previous configuration keeps running.\n{reason}"
)
MODE_USAGE = __("Usage: /mode mention (answer when mentioned or replied to) or /mode all.")
MODE_SET: dict[str, LazyProxy] = {
    "mention": __("OK: in this chat I answer when mentioned or replied to."),
    "all": __("OK: in this chat I answer every message."),
}
MODE_GROUPS_ONLY = __("/mode is for groups: in a private chat I answer every message.")
STATS_USAGE = __("Usage: /stats [window], e.g. /stats 24h or /stats 30d (default 7d, at most 90d).")
# Translators: {window} is what the operator typed, e.g. "7d" or "24h".
STATS_HEADER = __("📊 Last {window}:")
# Translators: {ratio} is the " (N% liked)" part or nothing; {first} and {total} are
# durations such as "1.2 s" or "—".
STATS_AGENT = __(
    "{title} [{name}]: {answers} answers, {errors} errors, {stopped} stopped; "
    "👍 {likes} 👎 {dislikes}{ratio}; first text {first}, complete {total} (medians)"
)
STATS_RATIO = __(" ({percent}% liked)")
# Translators: shown for a duration that is unknown.
STATS_NONE = __("—")
# Translators: a duration in seconds; {seconds} is a number such as 1.5.
STATS_SECONDS = __("{seconds} s")
# Translators: {platform} is a platform's name (e.g. "Dify"), {summary} its own figures.
STATS_PLATFORM = __("  {platform}: {summary}")
STATS_PLATFORM_FAILED = __("  platform statistics unavailable ({reason})")

RESET_DONE = __("🧹 Done — your next message starts a new conversation with {agent}.")
NOTHING_TO_STOP = __("There is no answer being written right now.")
STOP_BUTTON = __("⏹ Stop")
STOPPING = __("Stopping…")
MENTION_ONLY = __("Yes? Write your question after the mention, or reply to one of my messages.")
TEXT_ONLY = __("I can read text messages only for now — please send your question as text.")
CONVERSATION_RESTARTED = __(
    "ℹ️ {agent} no longer knows our earlier conversation, so I started a new one."
)
# Translators: a suggested question the user tapped, shown as asked.
SUGGESTION_ASKED = __("❓ {question}")
NO_BRANCHING = __(
    "ℹ️ {agent} can only continue from its latest answer, so I continue the latest "
    "conversation (not the answer you replied to)."
)
EMPTY_ANSWER = __("{agent} sent an empty answer.")
INTERNAL_ERROR = __("⚠️ Something went wrong on my side. Please try again.")
# Translators: a message was still waiting for its turn when the bot was stopped or restarted.
SHUTTING_DOWN = __("⚠️ I am restarting and could not answer this. Please send it again.")

FEEDBACK_THANKS: dict[str, LazyProxy] = {
    "like": __("Thanks for the 👍!"),
    "dislike": __("Thanks — noted 👎."),
}
FEEDBACK_CLEARED = __("Your rating was removed.")
FEEDBACK_CANNOT_CLEAR = __("{agent} cannot take a rating back.")
FEEDBACK_UNSUPPORTED = __("{agent} does not accept ratings.")
FEEDBACK_UNKNOWN = __("I no longer know this answer, so it can't be rated.")
FEEDBACK_FAILED = __("The rating could not be sent to {agent}. Please try again later.")
BUTTON_EXPIRED = __("This button is no longer valid.")
SUGGESTION_UNKNOWN = __("I no longer know this suggestion — please type your question.")

SOURCES_HEADER = __("📚 Sources: ")
SOURCE_UNTITLED = __("untitled")
SOURCES_MORE = __(" (+{count} more)")

FINISH_NOTES: dict[FinishReason, LazyProxy] = {
    FinishReason.STOPPED: __("⏹ Stopped."),
    FinishReason.LENGTH: __("✂️ The answer was cut off by the agent's length limit."),
    FinishReason.CONTENT_FILTER: __("🚫 The model provider filtered this answer."),
}

# /lang. Language names are shown as each language calls itself, never translated.
# Translators: {language} is a language's own name: English, Русский or 中文.
LANG_CURRENT = __("🌐 Language in this chat: {language}.")
LANG_FROM_TELEGRAM = __("It follows each person's Telegram language.")
LANG_CHOSEN = __("It was chosen for this chat with /lang.")
LANG_CHOOSE = __("Choose one below, or send /lang en, /lang ru, /lang zh or /lang auto.")
LANG_AUTO_BUTTON = __("Automatic")
# Translators: {language} is a language's own name: English, Русский or 中文.
LANG_SET = __("✅ From now on I speak {language} in this chat.")
LANG_SET_AUTO = __("✅ From now on I answer everyone here in their Telegram language.")
LANG_USAGE = __("Usage: /lang en, /lang ru, /lang zh or /lang auto.")
LANG_ADMINS_ONLY = __("Only the chat's admins can change the language here.")

_ERRORS: dict[str, LazyProxy] = {
    "unavailable": __("⚠️ {agent} can't be reached right now. Please try again in a minute."),
    "timeout": __("⚠️ {agent} took too long to answer. Please try again."),
    "auth": __("⚠️ {agent} refused the bot's credentials. Please tell the bot's operator."),
    "rate_limited": __(
        "⚠️ {agent} is busy right now (too many requests). Please try again shortly."
    ),
    "quota": __("⚠️ {agent}'s usage limit is reached. Please tell the bot's operator."),
    "bad_request": __("⚠️ {agent} rejected the request. The operator may need to check its setup."),
    "not_found": __("⚠️ {agent} was not found at its configured address. Please tell the operator."),
    "conversation_not_found": __(
        "⚠️ {agent} lost our conversation. Please send your message again."
    ),
    "upstream": __("⚠️ {agent}'s model failed to answer. Please try again."),
    "stream_cut": __("✂️ The answer was cut short by the connection to {agent}."),
    "protocol": __("⚠️ {agent} sent an answer I could not read."),
}
_GENERIC_ERROR = __("⚠️ {agent} could not answer. Please try again.")


def error_text(error: AgentError, agent: str) -> str:
    return str(_ERRORS.get(error.kind, _GENERIC_ERROR)).format(agent=agent)


def feedback_button(rating: str, selected: bool, count: int | None = None) -> str:
    # Icons and numbers only: nothing to translate.
    icon = "👍" if rating == "like" else "👎"
    if count:
        return f"{icon} {count}"
    return f"{icon} ✓" if selected else icon
