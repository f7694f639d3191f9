#!/usr/bin/env bash
# Installs what preflight needs on a fresh Debian/Ubuntu machine, and nothing twice:
#   - system packages (apt, when root); not root and one is missing: prints the command, exits 2.
#     scripts/debian-packages.txt names each with the version preflight was tested with; a
#     machine with another version gets a warning (the install goes on).
#   - promtool and amtool (the monitoring probes), Prometheus, Alertmanager and the node,
#     PostgreSQL and Redis exporters (the native target's observability), each extracted alone
#     from Debian's package (the prometheus package would pull 330 MB of web-UI libraries; the
#     binaries are static Go programs that need only libc)
#   - a Docker engine for the containers target: Debian's docker.io, and dockerd started when
#     none answers (as root; not root: prints the command, exits 2). PREFLIGHT_NO_DOCKER=1 skips
#     it on a machine that runs the native target only.
#   - a virtual environment in .venv holding exactly the Python packages of uv.lock (the project
#     with all its extras: probes, load, browser, system and dev; hashes checked, nothing
#     else), installed by uv and re-done only when pyproject.toml or uv.lock changes
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=$(realpath "${PREFLIGHT_DEBIAN_PACKAGES:-scripts/debian-packages.txt}")  # tests point it elsewhere
# tested_version PACKAGE: the version scripts/debian-packages.txt names for it.
tested_version() {
    awk -v p="$1" '$1 == p { print $2 }' "$PACKAGES"
}
# warn_version PACKAGE VERSION: a warning when VERSION is not the tested one.
warn_version() {
    local tested
    tested=$(tested_version "$1")
    if [ -n "$tested" ] && [ "$2" != "$tested" ]; then
        echo "setup: warning: $1 is $2 here; preflight was tested with $tested ($PACKAGES)" >&2
    fi
}

# PREFLIGHT_APT_PACKAGES overrides the list (the tests use it to show the not-root path).
# chromium and fonts-dejavu-core: tests/test_report_browser.py renders the HTML report headless,
# and the browser journeys (checks/testing/test_browser_journeys.py) drive the web client in it.
# logrotate: the monitoring probes validate system/monitoring/logrotate with it.
# docker-compose: the deployment probes resolve system/deploy/docker-compose.yml with it.
read -r -a APT_PACKAGES <<< "${PREFLIGHT_APT_PACKAGES:-$(awk '!/^#/ && $3 == "apt" { printf "%s ", $1 }' "$PACKAGES")}"
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
for pkg in "${APT_PACKAGES[@]}"; do
    version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
    [ -z "$version" ] || warn_version "$pkg" "$version"
done

# Single files out of a Debian package, only when missing.
# extract PACKAGE FROM TO MODE FILE...: each FILE under FROM in the package that is missing under
# TO is installed there with MODE; one download for all of them.
extract() {
    local package=$1 from=$2 to=$3 mode=$4 work file
    shift 4
    local wanted=()
    for file in "$@"; do
        [ -e "$to/$file" ] || wanted+=("$file")
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
        warn_version "$package" "$(dpkg-deb -f "$package"_*.deb Version)"
        for file in "${wanted[@]}"; do
            dpkg-deb --fsys-tarfile "$package"_*.deb | tar -x ".$from/$file"
            install -D -m"$mode" ".$from/$file" "$to/$file"
        done
    )
    rm -rf "$work"
}
# PREFLIGHT_BIN_DIR overrides where the binaries go (the tests use it).
BIN_DIR=${PREFLIGHT_BIN_DIR:-/usr/local/bin}
# Every package the list marks `extract: BINARY...`; each binary must then run.
while read -r package binaries; do
    read -r -a binaries <<< "$binaries"
    extract "$package" /usr/bin "$BIN_DIR" 755 "${binaries[@]}"
    for binary in "${binaries[@]}"; do
        "$BIN_DIR/$binary" --version >/dev/null 2>&1
    done
done < <(awk '!/^#/ && $3 == "extract:" { $2 = ""; $3 = ""; print }' "$PACKAGES")
# Debian's Alertmanager reads its notification templates from this fixed path.
# PREFLIGHT_SHARE_DIR overrides /usr/share (the tests use it).
SHARE_DIR=${PREFLIGHT_SHARE_DIR:-/usr/share}
extract prometheus-alertmanager /usr/share/prometheus/alertmanager \
    "$SHARE_DIR/prometheus/alertmanager" 644 default.tmpl email.tmpl

# Docker: the containers target builds its images and runs them on this machine's engine.
engine_answers() {
    timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}
if [ -z "${PREFLIGHT_NO_DOCKER:-}" ] && ! engine_answers; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: no Docker engine answers; start one as root, then run the same make command again:" >&2
        echo "    sudo sh -c 'dockerd >/var/log/dockerd.log 2>&1 &'" >&2
        echo "setup: (or set PREFLIGHT_NO_DOCKER=1 to use the native target only)" >&2
        exit 2
    fi
    echo "setup: starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        engine_answers && break
        sleep 0.5
    done
    if ! engine_answers; then
        echo "setup: dockerd did not answer within 30 s; the end of /var/log/dockerd.log:" >&2
        tail -n 5 /var/log/dockerd.log >&2
        exit 2
    fi
fi

# Python: uv installs exactly uv.lock into .venv. scripts/uv.sh installs uv itself (from PyPI at
# the version and hashes of scripts/uv-requirements.txt) into .tools/uv, apart from .venv, which
# holds only the lock. `make lock` refreshes uv.lock after a change to pyproject.toml.
PY=${PYTHON:-python3}
scripts/uv.sh --version >/dev/null
# A .venv made by another tool (python -m venv seeds pip and setuptools, which uv leaves in
# place) is made again, so that it holds the lock and nothing else.
if [ -d .venv ] && ! grep -q '^uv = ' .venv/pyvenv.cfg 2>/dev/null; then
    echo "setup: making .venv again with uv (it was made by another tool)"
    rm -rf .venv
fi
stamp=.venv/.preflight-installed
want=$(cat pyproject.toml uv.lock scripts/uv-requirements.txt | sha256sum | cut -d" " -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing the locked Python packages into .venv (uv.lock)"
    # --locked: refuse a uv.lock that no longer matches pyproject.toml instead of re-resolving.
    # Exact by default: a package in .venv that the lock does not name is removed.
    # Playwright drives the system's chromium: it must never fetch a browser of its own.
    if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
        scripts/uv.sh sync --locked --all-extras --python "$PY" --quiet; then
        echo "setup: could not install uv.lock into .venv (above). If pyproject.toml changed," >&2
        echo "setup: refresh the lock with 'make lock' and commit uv.lock with it." >&2
        exit 2
    fi
    # The lock checked against the package index once: the same check as --locked, resolved in
    # full, which leaves the index pages of every package in uv's cache for the tests that run
    # `uv lock --check --offline` (a cache without them fails those tests, not the lock).
    if ! scripts/uv.sh lock --check --quiet; then
        echo "setup: uv.lock does not match pyproject.toml: run 'make lock' and commit it." >&2
        exit 2
    fi
    echo "$want" > "$stamp"
fi

# MITRE's HDF parser for the tests of `preflight report --format hdf` (scripts/inspecjs.sh).
scripts/inspecjs.sh
