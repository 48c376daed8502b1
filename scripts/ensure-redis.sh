#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1 for the tests.
#
#   scripts/ensure-redis.sh [start] [PORT]   start one only if nothing answers PONG
#   scripts/ensure-redis.sh stop [PORT]      stop it, but only if this script started it
#
# PORT defaults to 6379. When this script starts a Redis it writes the marker
# .cache/redis-PORT.started (holding the server's pid), so a caller can tell
# whether to stop it afterwards; a Redis that was already running is never
# touched. The Redis it starts keeps nothing on disk.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"

ACTION="start"
if [[ "${1:-}" == start || "${1:-}" == stop ]]; then
    ACTION="$1"
    shift
fi
PORT="${1:-6379}"
MARKER="$CACHE/redis-$PORT.started"
PIDFILE="$CACHE/redis-$PORT.pid"
LOGFILE="$CACHE/redis-$PORT.log"
START_TIMEOUT="${REDIS_START_TIMEOUT:-30}"

say() { echo "redis: $*"; }
die() { echo "redis: error: $*" >&2; exit 1; }

if ! [[ "$PORT" =~ ^[1-9][0-9]{0,4}$ ]] || ((PORT > 65535)); then
    die "bad port: $PORT"
fi

pong() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == PONG ]]
    else
        # No redis-cli: speak the protocol over bash's /dev/tcp.
        local reply
        reply="$(
            exec 2>/dev/null
            exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
            printf 'PING\r\n' >&3
            IFS= read -r -t 2 line <&3 || exit 1
            echo "$line"
        )" || return 1
        [[ "$reply" == "+PONG"* ]]
    fi
}

# The pid in the marker, if that process is alive and is a redis-server.
marked_pid() {
    [[ -f "$MARKER" ]] || return 1
    local pid
    pid="$(cat "$MARKER" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    local args=""
    if [[ -r "/proc/$pid/cmdline" ]]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
        args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    fi
    [[ "$args" == *redis-server* ]] || return 1
    echo "$pid"
}

cmd_start() {
    if pong; then
        local pid
        if pid="$(marked_pid)"; then
            say "already running on 127.0.0.1:$PORT (started earlier by this script, pid $pid)"
        else
            rm -f "$MARKER"
            say "already running on 127.0.0.1:$PORT (not started by this script)"
        fi
        return 0
    fi
    rm -f "$MARKER" "$PIDFILE"
    command -v redis-server >/dev/null 2>&1 ||
        die "nothing answers on 127.0.0.1:$PORT and redis-server is not installed"
    mkdir -p "$CACHE"
    say "nothing answers on 127.0.0.1:$PORT; starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" \
        --save "" --appendonly no --dir "$CACHE" \
        --pidfile "$PIDFILE" --logfile "$LOGFILE" ||
        die "redis-server failed to start (see ${LOGFILE#"$ROOT"/})"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ! pong; do
        if ((SECONDS >= deadline)); then
            [[ -f "$LOGFILE" ]] && tail -n 20 "$LOGFILE" >&2
            die "redis-server did not answer on 127.0.0.1:$PORT within ${START_TIMEOUT} s"
        fi
        sleep 0.1
    done
    # The daemon writes its pid file just after it starts listening.
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$PIDFILE" ]] && break
        sleep 0.1
    done
    [[ -s "$PIDFILE" ]] || die "redis-server wrote no pid file at ${PIDFILE#"$ROOT"/}"
    cp "$PIDFILE" "$MARKER"
    say "started on 127.0.0.1:$PORT (pid $(cat "$MARKER"); marker ${MARKER#"$ROOT"/})"
}

cmd_stop() {
    local pid
    if ! pid="$(marked_pid)"; then
        rm -f "$MARKER"
        say "nothing to stop on port $PORT (this script did not start the Redis there)"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$MARKER" "$PIDFILE"
    say "stopped the redis-server this script started (pid $pid, port $PORT)"
}

case "$ACTION" in
    start) cmd_start ;;
    stop) cmd_stop ;;
esac
