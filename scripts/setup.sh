#!/usr/bin/env bash
# Installs what preflight needs on a fresh Debian/Ubuntu machine, and nothing twice:
#   - system packages (apt, when root); not root and one is missing: prints the command, exits 2
#   - a virtual environment in .venv with the project and its dev extras, re-done only when
#     pyproject.toml changes
set -euo pipefail
cd "$(dirname "$0")/.."

# PREFLIGHT_APT_PACKAGES overrides the list (the tests use it to show the not-root path).
# chromium and fonts-dejavu-core: tests/test_report_browser.py renders the HTML report headless.
read -r -a APT_PACKAGES <<< "${PREFLIGHT_APT_PACKAGES:-redis-server nginx postgresql-15 openssl ca-certificates procps chromium fonts-dejavu-core}"
PG_BIN=/usr/lib/postgresql/15/bin

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        # PostgreSQL may come from outside apt (a base image); its binaries are what count.
        if [ "$pkg" = postgresql-15 ] && [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ]; then
            continue
        fi
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing system packages: ${missing[*]}" >&2
        echo "setup: run this as root, then run the same make command again:" >&2
        echo "    sudo sh -c '$cmd'" >&2
        exit 2
    fi
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
stamp=.venv/.preflight-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing the project into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
