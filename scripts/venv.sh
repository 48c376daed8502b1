#!/usr/bin/env bash
# Create the virtualenv if it is missing and install the project into it
# (editable), with one optional extra.
#
#   scripts/venv.sh [EXTRA]        EXTRA is demo or test; none installs the base package
#
# Environment:
#   PYTHON         interpreter used to create the venv (default python3 from PATH)
#   VENV           venv directory (default .venv)
#   FORCE_INSTALL  set to 1 to reinstall even if pyproject.toml has not changed
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRA="${1:-}"

die() { echo "venv: error: $*" >&2; exit 1; }

NEED='import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'

if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 ||
        die "$PYTHON not found on PATH: Python 3.11 or newer is required"
    "$PYTHON" -c "$NEED" ||
        die "Python 3.11 or newer is required, but $PYTHON is $("$PYTHON" -V 2>&1)" \
            "(set PYTHON=/path/to/python3.11 or newer)"
    echo "venv: creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -c "$NEED" ||
    die "$VENV has $("$VENV/bin/python" -V 2>&1), but 3.11 or newer is required;" \
        "remove it (make distclean) and try again"
"$VENV/bin/python" -m pip --version >/dev/null 2>&1 ||
    die "$VENV has no working pip; remove it (make distclean) and try again"

spec="."
[[ -n "$EXTRA" ]] && spec=".[$EXTRA]"

# Skip pip when this extra was installed from the same pyproject.toml already:
# the install is editable, so code changes need no reinstall.
stamp="$VENV/.koo-feed-installed-${EXTRA:-base}"
want="$(cksum <pyproject.toml)"
if [[ -z "${FORCE_INSTALL:-}" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
    [[ -x "$VENV/bin/feed" ]]; then
    echo "venv: $VENV is up to date for '$spec'"
    exit 0
fi

echo "venv: pip install -e '$spec' into $VENV"
rm -f "$stamp"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
    -e "$spec"
echo "$want" >"$stamp"
