#!/usr/bin/env bash
# Installs what preflight needs on a fresh Debian/Ubuntu machine, and nothing twice:
#   - system packages (apt, when root); not root and one is missing: prints the command, exits 2
#   - promtool and amtool (the monitoring probes), Prometheus, Alertmanager and the node,
#     PostgreSQL and Redis exporters (the native target's observability), each extracted alone
#     from Debian's package (the prometheus package would pull 330 MB of web-UI libraries; the
#     binaries are static Go programs that need only libc)
#   - a virtual environment in .venv with the project and its dev extras, re-done only when
#     pyproject.toml changes
set -euo pipefail
cd "$(dirname "$0")/.."

# PREFLIGHT_APT_PACKAGES overrides the list (the tests use it to show the not-root path).
# chromium and fonts-dejavu-core: tests/test_report_browser.py renders the HTML report headless,
# and the browser journeys (checks/testing/test_browser_journeys.py) drive the web client in it.
# logrotate: the monitoring probes validate system/monitoring/logrotate with it.
read -r -a APT_PACKAGES <<< "${PREFLIGHT_APT_PACKAGES:-redis-server nginx postgresql-15 openssl ca-certificates procps chromium fonts-dejavu-core logrotate docker-compose}"
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

# Single binaries out of a Debian package, as environment-notes.md describes: only when missing.
# PREFLIGHT_BIN_DIR overrides where they go (the tests use it).
BIN_DIR=${PREFLIGHT_BIN_DIR:-/usr/local/bin}
extract_binaries() {  # extract_binaries PACKAGE BINARY... (one download for the missing ones)
    local package=$1 work binary
    shift
    local wanted=()
    for binary in "$@"; do
        [ -x "$BIN_DIR/$binary" ] || wanted+=("$binary")
    done
    if [ "${#wanted[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: ${wanted[*]} missing; run this script as root to extract from $package" >&2
        exit 2
    fi
    echo "setup: installing ${wanted[*]} from Debian's $package package"
    work=$(mktemp -d)
    (
        cd "$work"
        # As root into a 0700 dir apt prints a harmless "Download is performed unsandboxed" note.
        apt-get download -q "$package"
        for binary in "${wanted[@]}"; do
            dpkg-deb --fsys-tarfile "$package"_*.deb | tar -x "./usr/bin/$binary"
            install -D -m755 "usr/bin/$binary" "$BIN_DIR/$binary"
        done
    )
    rm -rf "$work"
    for binary in "${wanted[@]}"; do
        "$BIN_DIR/$binary" --version >/dev/null 2>&1
    done
}
extract_binaries prometheus promtool prometheus
extract_binaries prometheus-alertmanager amtool prometheus-alertmanager
# Debian's Alertmanager reads its notification templates from this fixed path.
# PREFLIGHT_SHARE_DIR overrides /usr/share (the tests use it).
SHARE_DIR=${PREFLIGHT_SHARE_DIR:-/usr/share}
templates=prometheus/alertmanager
if [ ! -f "$SHARE_DIR/$templates/default.tmpl" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: Alertmanager's templates are missing; run this script as root" >&2
        exit 2
    fi
    echo "setup: installing Alertmanager's templates from Debian's prometheus-alertmanager package"
    work=$(mktemp -d)
    (
        cd "$work"
        apt-get download -q prometheus-alertmanager
        dpkg-deb --fsys-tarfile prometheus-alertmanager_*.deb \
            | tar -x "./usr/share/$templates/default.tmpl" "./usr/share/$templates/email.tmpl"
        install -D -m644 -t "$SHARE_DIR/$templates" usr/share/"$templates"/*.tmpl
    )
    rm -rf "$work"
fi
extract_binaries prometheus-node-exporter prometheus-node-exporter
extract_binaries prometheus-postgres-exporter prometheus-postgres-exporter
extract_binaries prometheus-redis-exporter prometheus-redis-exporter

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
    # Playwright drives the system's chromium: it must never fetch a browser of its own.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
