#!/usr/bin/env bash
# Everything `make test` (and so CI) checks, in order:
#   1. the venv with the test extra,
#   2. ruff check and mypy,
#   3. Redis on 127.0.0.1:6379 (started only if none answers) and DynamoDB Local,
#   4. pytest against moto's server (the test suite starts it itself),
#   5. pytest -m dynamodb against DynamoDB Local.
# Services this script started are stopped on exit, whatever happened.
# Arguments are passed to both pytest runs, e.g. scripts/test.sh -x -k feed
#
# Environment:
#   FEED_TEST_DYNAMODB_PORT  port for DynamoDB Local (default 8765)
#   PYTHON, VENV             see scripts/venv.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
export VENV
DDB_PORT="${FEED_TEST_DYNAMODB_PORT:-8765}"
REDIS_PORT=6379
REDIS_MARKER=".cache/redis-$REDIS_PORT.started"

stop_ddb=0
stop_redis=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((stop_ddb)); then
        bash scripts/dynamodb-local.sh stop "$DDB_PORT" || rc=1
    fi
    if ((stop_redis)); then
        bash scripts/ensure-redis.sh stop "$REDIS_PORT" || rc=1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }

failed=()

# A pytest run; exit code 5 (nothing collected) counts as a failure.
run_pytest() {
    local label="$1"
    shift
    local rc=0
    "$VENV/bin/pytest" "$@" || rc=$?
    if ((rc == 5)); then
        echo "error: pytest [$label] collected no tests: a run that tests nothing must not pass" >&2
    fi
    if ((rc != 0)); then
        failed+=("pytest[$label] (exit $rc)")
    fi
}

step "virtualenv with the test extra"
bash scripts/venv.sh test

step "ruff check"
"$VENV/bin/ruff" check . || failed+=("ruff")

step "mypy"
"$VENV/bin/mypy" || failed+=("mypy")

step "services"
redis_before="$(cat "$REDIS_MARKER" 2>/dev/null || true)"
bash scripts/ensure-redis.sh "$REDIS_PORT"
redis_after="$(cat "$REDIS_MARKER" 2>/dev/null || true)"
if [[ -n "$redis_after" && "$redis_after" != "$redis_before" ]]; then
    stop_redis=1
fi
# Leave alone a DynamoDB Local that was running before this run.
if ! bash scripts/dynamodb-local.sh status "$DDB_PORT" >/dev/null; then
    stop_ddb=1
fi
bash scripts/dynamodb-local.sh start "$DDB_PORT"

step "pytest against moto's server"
FEED_TEST_BACKEND=moto run_pytest moto "$@"

step "pytest -m dynamodb against DynamoDB Local on port $DDB_PORT"
FEED_TEST_BACKEND=local FEED_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$DDB_PORT" \
    run_pytest local -m dynamodb "$@"

echo
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed: ruff, mypy, pytest[moto], pytest[local]"
