"""Every text a user can see, in one place (translations will hang off this module).

Error texts are chosen by the error's kind, never built from the platform's message: platform
messages can be technical, misleading ("Dify Hosted OpenAI …") or contain internal details.
"""

from __future__ import annotations

from bot.agents.base import AgentError, FinishReason

GREETING = (
    "Hi! I'm a bot that lets you talk to {agent}.\n\n"
    "Just send me a message. /reset starts a new conversation, /stop stops an answer, "
    "and /help shows everything I can do."
)

HELP = (
    "Send a text message and {agent} answers it here; the reply grows as it is written.\n\n"
    "/reset — start a new conversation (alias /new)\n"
    "/stop — stop the answer being written\n"
    "/help — this help\n\n"
    "Rate answers with 👍 / 👎 under them; pressing your choice again takes it back."
)

COMMAND_DESCRIPTIONS = {
    "start": "Start and show the greeting",
    "help": "What this bot can do",
    "reset": "Start a new conversation",
    "stop": "Stop the answer being written",
}
GROUP_COMMAND_DESCRIPTIONS = {
    "help": "What this bot can do",
    "reset": "Start a new conversation in this chat",
    "stop": "Stop the answer being written",
}
OPERATOR_COMMAND_DESCRIPTIONS = {
    "agents": "List the agents",
    "agent": "Switch the agent serving a chat",
    "stats": "Answers, ratings and timings per agent",
    "reload": "Reload the agents file",
    "mode": "In a group: answer mentions only, or all messages",
}

OPERATORS_ONLY = "This command is for the bot's operators."
NOT_ALLOWED = "Sorry, this bot is private. Ask its operator for access."
RATE_LIMITED = "You are writing faster than I can answer. Please wait {seconds} s and try again."
TOO_LONG = (
    "Your message is {length} characters long; the limit is {limit}. Please shorten it or "
    "split it into parts."
)
STOP_NOT_YOURS = "Only the person who asked (or a chat admin) can stop this answer."
AGENTS_HEADER = "Agents (▶ serves this chat):"
AGENT_LINE = "{marker} {name} — {title} [{platform}]{default}"
AGENT_DEFAULT_MARK = " (default)"
AGENT_PICK = "Which agent should serve this chat? Now: {current}."
AGENT_SWITCHED = "✅ {title} now serves this chat. Its earlier conversation here continues."
AGENT_ALREADY = "{title} already serves this chat."
AGENT_UNKNOWN = "There is no agent called {name}. Known: {known}."
RELOADED = "✅ Agents file reloaded: {agents}."
RELOAD_FAILED = (
    "❌ The agents file was rejected; the previous configuration keeps running.\n{reason}"
)
MODE_USAGE = "Usage: /mode mention (answer when mentioned or replied to) or /mode all."
MODE_SET = {
    "mention": "OK: in this chat I answer when mentioned or replied to.",
    "all": "OK: in this chat I answer every message.",
}
MODE_GROUPS_ONLY = "/mode is for groups: in a private chat I answer every message."
STATS_USAGE = "Usage: /stats [window], e.g. /stats 24h or /stats 30d (default 7d, at most 90d)."
STATS_HEADER = "📊 Last {window}:"
STATS_AGENT = (
    "{title} [{name}]: {answers} answers, {errors} errors, {stopped} stopped; "
    "👍 {likes} 👎 {dislikes}{ratio}; first text {first}, complete {total} (medians)"
)
STATS_RATIO = " ({percent}% liked)"
STATS_NONE = "—"
STATS_PLATFORM = "  {platform}: {summary}"
STATS_PLATFORM_FAILED = "  platform statistics unavailable ({reason})"

RESET_DONE = "🧹 Done — your next message starts a new conversation with {agent}."
NOTHING_TO_STOP = "There is no answer being written right now."
STOP_BUTTON = "⏹ Stop"
STOPPING = "Stopping…"
MENTION_ONLY = "Yes? Write your question after the mention, or reply to one of my messages."
TEXT_ONLY = "I can read text messages only for now — please send your question as text."
CONVERSATION_RESTARTED = (
    "ℹ️ {agent} no longer knows our earlier conversation, so I started a new one."
)
SUGGESTION_ASKED = "❓ {question}"
NO_BRANCHING = (
    "ℹ️ {agent} can only continue from its latest answer, so I continue the latest "
    "conversation (not the answer you replied to)."
)
EMPTY_ANSWER = "{agent} sent an empty answer."
INTERNAL_ERROR = "⚠️ Something went wrong on my side. Please try again."

FEEDBACK_THANKS = {"like": "Thanks for the 👍!", "dislike": "Thanks — noted 👎."}
FEEDBACK_CLEARED = "Your rating was removed."
FEEDBACK_CANNOT_CLEAR = "{agent} cannot take a rating back."
FEEDBACK_UNSUPPORTED = "{agent} does not accept ratings."
FEEDBACK_UNKNOWN = "I no longer know this answer, so it can't be rated."
FEEDBACK_FAILED = "The rating could not be sent to {agent}. Please try again later."
BUTTON_EXPIRED = "This button is no longer valid."
SUGGESTION_UNKNOWN = "I no longer know this suggestion — please type your question."

SOURCES_HEADER = "📚 Sources: "
SOURCE_UNTITLED = "untitled"
SOURCES_MORE = " (+{count} more)"

FINISH_NOTES = {
    FinishReason.STOPPED: "⏹ Stopped.",
    FinishReason.LENGTH: "✂️ The answer was cut off by the agent's length limit.",
    FinishReason.CONTENT_FILTER: "🚫 The model provider filtered this answer.",
}

_ERRORS = {
    "unavailable": "⚠️ {agent} can't be reached right now. Please try again in a minute.",
    "timeout": "⚠️ {agent} took too long to answer. Please try again.",
    "auth": "⚠️ {agent} refused the bot's credentials. Please tell the bot's operator.",
    "rate_limited": "⚠️ {agent} is busy right now (too many requests). Please try again shortly.",
    "quota": "⚠️ {agent}'s usage limit is reached. Please tell the bot's operator.",
    "bad_request": "⚠️ {agent} rejected the request. The operator may need to check its setup.",
    "not_found": "⚠️ {agent} was not found at its configured address. Please tell the operator.",
    "conversation_not_found": "⚠️ {agent} lost our conversation. Please send your message again.",
    "upstream": "⚠️ {agent}'s model failed to answer. Please try again.",
    "stream_cut": "✂️ The answer was cut short by the connection to {agent}.",
    "protocol": "⚠️ {agent} sent an answer I could not read.",
}
_GENERIC_ERROR = "⚠️ {agent} could not answer. Please try again."


def error_text(error: AgentError, agent: str) -> str:
    return _ERRORS.get(error.kind, _GENERIC_ERROR).format(agent=agent)


def feedback_button(rating: str, selected: bool, count: int | None = None) -> str:
    icon = "👍" if rating == "like" else "👎"
    if count:
        return f"{icon} {count}"
    return f"{icon} ✓" if selected else icon
