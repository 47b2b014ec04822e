#!/usr/bin/env bash
# Everything the test suite needs, from a fresh checkout: a virtualenv with the project and its
# dev tools, a Redis server on 127.0.0.1:6379 (started here when none answers), then lint,
# type checks and the tests. Extra arguments go to pytest, e.g. `./scripts/test.sh -k dify`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The editable install runs from this tree: compile the message catalogs (.po -> .mo) here.
.venv/bin/python -m bot.i18n >/dev/null

redis_answers() {
    .venv/bin/python - <<'PY' 2>/dev/null
import redis
redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
PY
}

if ! redis_answers; then
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis-server is not installed; installing it with apt-get" >&2
        apt-get install -y -q redis-server >/dev/null
    fi
    echo "no Redis on 127.0.0.1:6379; starting one for the tests" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --logfile /tmp/relaygram-test-redis.log
    for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    redis_answers || { echo "Redis did not start; see /tmp/relaygram-test-redis.log" >&2; exit 1; }
fi

# The storage contract suite must run against the real server here, never skip it.
export RELAYGRAM_REQUIRE_REDIS=1

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
