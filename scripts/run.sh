#!/usr/bin/env bash
# Set up (virtualenv + install) and run the bot with long polling. Configuration comes from the
# environment or a .env file (BOT_TOKEN, AGENTS_FILE, REDIS_URL, ...), see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# The editable install runs from this tree: compile the message catalogs (.po -> .mo) here.
.venv/bin/python -m bot.i18n >/dev/null
exec .venv/bin/relaygram run
