#!/usr/bin/env bash
# Build the separate environments the Stream-Framework comparison runs in.
# Stream-Framework is never a dependency of the service: it lives only here.
#
#   bench/sf-env.sh [VARIANT...]    build (or check) the named variants; default: all
#   bench/sf-env.sh --path VARIANT  print the variant's python, build nothing
#
# Variants (each its own venv under .cache/):
#   current   stream-framework 1.4.0 with today's redis-py (and hiredis)   .cache/bench-sf
#   redis2    stream-framework 1.4.0 with redis-py 2.10.6, the redis-py of
#             its own era (no hiredis)                                      .cache/bench-sf-redis2
#
# Both get celery (Stream-Framework imports it for its fan-out tasks; the bench
# runs them eagerly, in-process) and six. stream-framework's setup.py imports
# setuptools.command.test, gone since setuptools 72, so it is built without
# build isolation against an older setuptools inside the venv. The source-level
# fixes it needs on current Python are made at import time by bench/sf/_shims.py.
#
# Environment:
#   PYTHON   interpreter for the venvs (default: .venv/bin/python, else python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

die() { echo "sf-env: error: $*" >&2; exit 1; }

venv_dir() {
    case "$1" in
        current) echo .cache/bench-sf ;;
        redis2) echo .cache/bench-sf-redis2 ;;
        *) die "unknown variant '$1' (current or redis2)" ;;
    esac
}

requirements() {
    local common=(stream-framework==1.4.0 "celery>=5.3,<6" six)
    case "$1" in
        current) echo "${common[@]}" "redis[hiredis]" ;;
        redis2) echo "${common[@]}" redis==2.10.6 ;;
    esac
}

if [[ "${1:-}" == "--path" ]]; then
    [[ -n "${2:-}" ]] || die "--path needs a variant"
    echo "$(venv_dir "$2")/bin/python"
    exit 0
fi

variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(current redis2)

for variant in "${variants[@]}"; do
    dir="$(venv_dir "$variant")"
    read -r -a reqs <<<"$(requirements "$variant")"
    stamp="$dir/.bench-sf-installed"
    want="${reqs[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dir/bin/python" ]]; then
        echo "sf-env: $variant is up to date in $dir"
        continue
    fi
    echo "sf-env: building $variant in $dir"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    pip=("$dir/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off)
    "${pip[@]}" "setuptools<72" wheel
    "${pip[@]}" --no-build-isolation "${reqs[@]}"
    "$dir/bin/python" -c "import stream_framework, redis; print('sf-env: $variant:',
        'stream-framework', stream_framework.__version__, 'redis-py', redis.__version__)"
    echo "$want" >"$stamp"
done
