#!/usr/bin/env bash
# Everything `make test` (and so CI) checks, in order:
#   1. the venv with the test extra,
#   2. ruff check and mypy,
#   3. `feed demo` once, on a small graph, so a broken demo fails the run like a failed test,
#   4. promtool (installed when the run may), then Redis on 127.0.0.1:6379 (started only
#      if none answers) and DynamoDB Local,
#   5. the suite on both DynamoDB data-plane clients (FEED_DYNAMODB_CLIENT=direct, the
#      default, and aioboto3), two runs at a time on the two cores, each on its own
#      pair of Redis databases, their output printed when both end:
#      - against moto's server (the suite starts it itself), without the tests marked
#        slow_on_moto (too slow there) or fault; on aioboto3 only the dynamodb tests
#        (the rest never touch DynamoDB);
#      - pytest -m "dynamodb or slow_on_moto" against DynamoDB Local, without fault;
#   6. the Python client (clients/python): built, installed alone into a fresh venv, and
#      tested against a live `feed api` (scripts/client-test.sh),
#   7. pytest -m fault (processes killed, services paused, faults injected) against
#      DynamoDB Local, alone, since its criteria include timings: on the direct client,
#      then on aioboto3 without the soak (a load test of the read path, not of a client)
#      and without the tests marked default_client_only (their faults are in Redis or
#      the API's clients, not in DynamoDB).
# Services this script started are stopped on exit, whatever happened.
# Arguments are passed to every pytest run, e.g. scripts/test.sh -x -k feed
#
# Environment:
#   FEED_TEST_DYNAMODB_PORT  port for DynamoDB Local (default 8765)
#   FEED_TEST_CLIENTS        data-plane clients to test (default "direct aioboto3")
#   FEED_TEST_DEMO_USERS     users in the demo's graph (default 40, with the celebrity
#                            threshold at 15 followers so that some authors are pulled at
#                            read time: every phase of the tour, in about a third of the time
#                            of the default 120 users)
#   PYTHON, VENV             see scripts/venv.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
export VENV
DDB_PORT="${FEED_TEST_DYNAMODB_PORT:-8765}"
read -r -a CLIENTS <<<"${FEED_TEST_CLIENTS:-direct aioboto3}"
REDIS_PORT=6379
REDIS_MARKER=".cache/redis-$REDIS_PORT.started"

stop_ddb=0
stop_redis=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Test runs still going (an interrupted run) go first.
    jobs -p | xargs -r kill 2>/dev/null || true
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

# The demo needs no services: it runs on its own embedded stand-ins.
DEMO_USERS="${FEED_TEST_DEMO_USERS:-40}"
step "feed demo --users $DEMO_USERS (the tour a newcomer runs first, on a smaller graph)"
demo_rc=0
demo_limit=()
if command -v timeout >/dev/null 2>&1; then demo_limit=(timeout 600); fi
FEED_CELEBRITY_FOLLOWERS=15 ${demo_limit[@]+"${demo_limit[@]}"} \
    "$VENV/bin/feed" demo --users "$DEMO_USERS" || demo_rc=$?
if ((demo_rc != 0)); then
    failed+=("feed demo (exit $demo_rc)")
fi

step "promtool (checks the alert rules in deploy/)"
# Debian's prometheus package ships promtool; installed here when the run may.
if ! command -v promtool >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] \
        && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prometheus >/dev/null || true
fi
if command -v promtool >/dev/null 2>&1; then
    promtool --version 2>&1 | head -1
else
    echo "error: promtool not found: apt-get install prometheus (or set" \
        "FEED_TEST_ALLOW_NO_PROMTOOL=1 to check the rules' names only)" >&2
    [[ "${FEED_TEST_ALLOW_NO_PROMTOOL:-}" == 1 ]] || failed+=("promtool")
fi

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

LOCAL_ENDPOINT="http://127.0.0.1:$DDB_PORT"
LOGS=".cache/test-logs"
mkdir -p "$LOGS"

# A pytest run in the background, its output into $LOGS/<label>.log and its exit code
# into $LOGS/<label>.rc.
start_pytest() {
    local label="$1"
    shift
    rm -f "$LOGS/$label.rc"
    ( rc=0; "$VENV/bin/pytest" "$@" >"$LOGS/$label.log" 2>&1 || rc=$?
      echo "$rc" >"$LOGS/$label.rc" ) &
}

# Print a background run's output and record its result; exit code 5 (nothing
# collected) counts as a failure.
finish_pytest() {
    local label="$1" rc
    step "pytest [$label] output"
    cat "$LOGS/$label.log"
    rc="$(cat "$LOGS/$label.rc" 2>/dev/null || echo 1)"
    if ((rc == 5)); then
        echo "error: pytest [$label] collected no tests: a run that tests nothing must not pass" >&2
    fi
    if ((rc != 0)); then
        failed+=("pytest[$label] (exit $rc)")
    fi
}

# A round is two runs side by side, one on moto and one on DynamoDB Local (so neither
# emulator serves both); with two clients, the second round swaps them over.
# round MOTO_CLIENT LOCAL_CLIENT [ARGS...]
round() {
    local moto_client="$1" local_client="$2" marks="not fault and not slow_on_moto"
    shift 2
    step "pytest against moto's server ($moto_client client) and DynamoDB Local at" \
        "$LOCAL_ENDPOINT ($local_client client), side by side"
    # Only the first client runs the tests that never touch DynamoDB.
    if [[ "$moto_client" != "${CLIENTS[0]}" ]]; then marks="dynamodb and $marks"; fi
    FEED_DYNAMODB_CLIENT="$moto_client" FEED_TEST_BACKEND=moto FEED_TEST_REDIS_DBS=14,15 \
        start_pytest "moto-$moto_client" -m "$marks" -p no:cacheprovider "$@"
    local_marks="(dynamodb or slow_on_moto) and not fault"
    if [[ "$local_client" != "${CLIENTS[0]}" ]]; then
        local_marks="$local_marks and not default_client_only"
    fi
    FEED_DYNAMODB_CLIENT="$local_client" FEED_TEST_BACKEND=local \
        FEED_TEST_DYNAMODB_ENDPOINT="$LOCAL_ENDPOINT" FEED_TEST_REDIS_DBS=12,13 \
        start_pytest "local-$local_client" -m "$local_marks" -p no:cacheprovider "$@"
    wait
    finish_pytest "moto-$moto_client"
    finish_pytest "local-$local_client"
}

if ((${#CLIENTS[@]} == 1)); then
    round "${CLIENTS[0]}" "${CLIENTS[0]}" "$@"
else
    round "${CLIENTS[0]}" "${CLIENTS[1]}" "$@"
    round "${CLIENTS[1]}" "${CLIENTS[0]}" "$@"
fi

# The Python client: built, installed alone in a fresh venv, tested against a live API.
step "the Python client (clients/python) against a live feed api"
venv_abs="$(cd "$VENV" && pwd)"
(cd clients/python && "$venv_abs/bin/mypy") || failed+=("mypy clients/python")
FEED_TEST_DYNAMODB_ENDPOINT="$LOCAL_ENDPOINT" FEED_TEST_REDIS_DBS=10,11 \
    bash scripts/client-test.sh -p no:cacheprovider || failed+=("client tests")

for client in "${CLIENTS[@]}"; do
    marks="fault"
    if [[ "$client" != "${CLIENTS[0]}" ]]; then
        marks="fault and not soak and not default_client_only"
    fi
    step "pytest -m \"$marks\" against DynamoDB Local ($LOCAL_ENDPOINT), $client client"
    FEED_DYNAMODB_CLIENT="$client" FEED_TEST_BACKEND=local \
        FEED_TEST_DYNAMODB_ENDPOINT="$LOCAL_ENDPOINT" FEED_TEST_REDIS_DBS=14,15 \
        run_pytest "fault-$client" -m "$marks" -p no:cacheprovider "$@"
done

echo
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed: ruff, mypy, feed demo, pytest on moto, DynamoDB Local and the fault" \
    "tests with the ${CLIENTS[*]} client(s), and the Python client"
