#!/usr/bin/env bash
# The Python client (clients/python) as its callers get it:
#   1. built as a wheel, from a copy of its sources (nothing is written into the tree),
#   2. installed into a fresh venv under a temporary directory with only its test
#      requirements (pytest, pytest-asyncio; httpx comes with the client), and checked to
#      have pulled in none of the service's dependencies,
#   3. its tests run there: the unit tests, and the live ones against a `feed api` this
#      script starts from the project's venv on tables of its own (`feed tables create`),
#      with Redis and DynamoDB as below; the tests publish with the client and run
#      `feed worker --burst` themselves.
# What it started (the API, the temporary directory) goes on exit, whatever happened.
# Redis and DynamoDB must be running (scripts/test.sh starts both; by hand:
# scripts/ensure-redis.sh, scripts/dynamodb-local.sh start).
# Arguments are passed to pytest, e.g. scripts/client-test.sh -x -k cursor
#
# Environment:
#   FEED_TEST_DYNAMODB_ENDPOINT  DynamoDB (default http://127.0.0.1:$FEED_TEST_DYNAMODB_PORT)
#   FEED_TEST_DYNAMODB_PORT      DynamoDB Local's port when no endpoint is given (default 8765)
#   FEED_TEST_REDIS_URL          Redis, without a database (default redis://127.0.0.1:6379)
#   FEED_TEST_REDIS_DBS          the queue's and the cache's databases, flushed first
#                                (default 10,11: not those of scripts/test.sh's runs)
#   FEED_DYNAMODB_CLIENT         the API's DynamoDB client, direct or aioboto3 (default direct)
#   PYTHON                       interpreter of the client's venv (default python3)
#   VENV                         the project's venv, whose `feed` runs (default .venv)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
FEED="$VENV/bin/feed"
DDB_ENDPOINT="${FEED_TEST_DYNAMODB_ENDPOINT:-http://127.0.0.1:${FEED_TEST_DYNAMODB_PORT:-8765}}"
REDIS_URL="${FEED_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
REDIS_URL="${REDIS_URL%/}"
IFS=, read -r QUEUE_DB CACHE_DB <<<"${FEED_TEST_REDIS_DBS:-10,11}"
TOKEN="client-test-token-$RANDOM$RANDOM"

step() { printf '\n==> client: %s\n' "$*"; }
die() { echo "client-test: error: $*" >&2; exit 1; }

[[ -x "$FEED" ]] || die "$FEED not found: run scripts/venv.sh first"
[[ "$QUEUE_DB" =~ ^[0-9]+$ && "$CACHE_DB" =~ ^[0-9]+$ ]] ||
    die "FEED_TEST_REDIS_DBS must be two database numbers, e.g. 10,11"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/koo-feed-client.XXXXXX")"
api_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$api_pid" ]] && kill -0 "$api_pid" 2>/dev/null; then
        kill -TERM "$api_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$api_pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$api_pid" 2>/dev/null; then
            echo "client-test: feed api (pid $api_pid) ignored SIGTERM; killing it" >&2
            kill -KILL "$api_pid" 2>/dev/null || true
        fi
        wait "$api_pid" 2>/dev/null || true
    fi
    if ((rc != 0)) && [[ -s "$WORK/api.log" ]]; then
        echo "---- last lines of the feed api's log ----" >&2
        tail -n 40 "$WORK/api.log" >&2
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "wheel"
mkdir -p "$WORK/src"
(cd clients/python && tar --exclude=__pycache__ --exclude='.*_cache' --exclude='*.egg-info' \
    --exclude=build --exclude=dist -cf - .) | tar -xf - -C "$WORK/src"
"$PYTHON" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" wheel --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
wheels=("$WORK"/dist/koo_feed_client-*.whl)
[[ -f "${wheels[0]}" ]] || die "no wheel was built"
echo "built $(basename "${wheels[0]}")"

step "install the wheel and its test requirements into a fresh venv"
"${PIP[@]}" install "${wheels[0]}[test]"
# The client must stand alone: none of the service's packages may come with it (asked
# from outside the tree, where the service's own packages are not importable).
(cd "$WORK" && "$WORK/venv/bin/python" - <<'EOF'
import importlib.util, sys
import koo_feed_client
present = [m for m in ("aioboto3", "arq", "starlette", "redis", "feed")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"the client's venv has the service's packages: {present}")
print(f"koo_feed_client {koo_feed_client.__version__} from {koo_feed_client.__file__}")
EOF
)

step "feed api on fresh tables (DynamoDB $DDB_ENDPOINT, Redis $REDIS_URL/{$QUEUE_DB,$CACHE_DB})"
export FEED_REDIS_URL="$REDIS_URL/$QUEUE_DB"
export FEED_CACHE_REDIS_URL="$REDIS_URL/$CACHE_DB"
export FEED_DYNAMODB_ENDPOINT="$DDB_ENDPOINT"
export FEED_TABLE_PREFIX="kfc$(printf '%04x%04x' "$RANDOM" "$RANDOM")_"
export FEED_API_TOKENS="$TOKEN"
export FEED_API_TIMEOUT=30 # a loaded machine must not turn slow reads into 503s
export FEED_WORKER_METRICS_PORT=0
export FEED_LOG_LEVEL=WARNING
# Dedicated test databases: the cache is not namespaced by table prefix, so an earlier
# run's entries (trending lists) would show through.
"$VENV/bin/python" - "$FEED_REDIS_URL" "$FEED_CACHE_REDIS_URL" <<'EOF'
import sys
import redis
for url in sys.argv[1:]:
    redis.Redis.from_url(url, socket_connect_timeout=5).flushdb()
EOF
"$FEED" tables create
port="$("$WORK/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$FEED" api --port "$port" >"$WORK/api.log" 2>&1 &
api_pid=$!
API_URL="http://127.0.0.1:$port"
"$WORK/venv/bin/python" - "$API_URL" "$api_pid" <<'EOF'
import os, sys, time
import httpx
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("feed api exited during start-up")
    try:
        if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
            print(f"feed api ready on {url}")
            sys.exit(0)
    except httpx.TransportError:
        pass
    time.sleep(0.25)
sys.exit(f"feed api not ready on {url} within 90 s")
EOF

step "pytest (the installed client, against $API_URL)"
rc=0
(cd clients/python &&
    FEED_TEST_API_URL="$API_URL" FEED_TEST_API_TOKEN="$TOKEN" FEED_TEST_FEED_BIN="$FEED" \
        "$WORK/venv/bin/pytest" -p no:cacheprovider "$@") || rc=$?
if ((rc == 5)); then
    echo "client-test: error: pytest collected no tests: a run that tests nothing must not pass" >&2
fi
exit "$rc"
