#!/bin/sh
# The synchronous replication guard of a PostgreSQL primary and its standby
# (system/docs/operations/replication.md, "Synchronous, with a guard").
#
# A commit on the primary returns only once a standby has it, so an acknowledged write survives
# the primary's loss. With one standby that would make the standby a second component every
# write depends on; the guard keeps it from being one. Every POSTGRES_SYNC_INTERVAL seconds
# (default 1) it asks each server of POSTGRES_SYNC_SERVERS (host:port, space separated) whether
# it is a primary, and on a primary sets synchronous_standby_names (ALTER SYSTEM, then a reload):
#   - to POSTGRES_SYNC_NAMES (default `ANY 1 (*)`: the first of any standbys to confirm) while
#     a standby streams from it: commits wait until a standby has flushed them;
#   - to '' while none does (the standby is down, being rebuilt, or not made yet): commits
#     return at once, and the waiting ones are released, so losing the standby stops writes
#     for one pass at most. What such a primary commits is on it alone until a standby streams
#     again.
# The setting is saved (postgresql.auto.conf) and a standby copied from the primary inherits it:
# run the guard whenever the pair runs, or a primary left without a standby waits forever.
# A standby is left alone; once promoted, it is a primary like any other.
#
# It connects as POSTGRES_USER (default postgres) with the password in POSTGRES_PASSWORD_FILE,
# over TLS where the server offers it (libpq's sslmode=prefer). It logs every change it makes
# and every server it cannot reach, once per change of state. With POSTGRES_SYNC_BEAT it touches
# that file after every pass, for a health check.
set -eu
set -f # no file name expansion of what the servers answer
cd / # psql warns on stderr about a working directory its user cannot read
: "${POSTGRES_SYNC_SERVERS:?POSTGRES_SYNC_SERVERS must name the servers as host:port}"
interval=${POSTGRES_SYNC_INTERVAL:-1}
names=${POSTGRES_SYNC_NAMES:-ANY 1 (*)}
PGPASSWORD=$(cat "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE must name the superuser password file}")
export PGPASSWORD PGCONNECT_TIMEOUT=3 PGAPPNAME=sync-guard
user=${POSTGRES_USER:-postgres}
# A standby reports the position it has replayed; a base backup's WAL stream (the backup job,
# a standby still being copied) and pg_receivewal report none, and are no standby to wait for.
query="SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'),
    (SELECT count(*) FROM pg_stat_replication
     WHERE state = 'streaming' AND replay_lsn IS NOT NULL)"

log() { echo "sync-guard: $*"; }

state_file=$(mktemp -d)
trap 'rm -rf "$state_file"' EXIT
trap 'exit 0' INT TERM
note() { # $1 server, $2 state: log only when the server's state changed
    key=$(printf '%s' "$1" | tr -c 'A-Za-z0-9' _)
    if [ "$(cat "$state_file/$key" 2>/dev/null || true)" != "$2" ]; then
        printf '%s' "$2" > "$state_file/$key"
        log "$1: $2"
    fi
}

guard() { # $1 host:port
    host=${1%:*} port=${1##*:}
    errors="$state_file/errors"
    if ! row=$(psql -h "$host" -p "$port" -U "$user" -d postgres -XAt -F '|' -c "$query" \
        2>"$errors"); then
        note "$1" "unreachable ($(tail -n 1 "$errors"))"
        return 0
    fi
    recovery=$(printf '%s' "$row" | cut -d'|' -f1)
    current=$(printf '%s' "$row" | cut -d'|' -f2)
    streaming=$(printf '%s' "$row" | cut -d'|' -f3)
    case "$recovery:$streaming" in
        t:*) note "$1" "standby"; return 0 ;;
        f:[0-9]|f:[0-9][0-9]) ;;
        *) note "$1" "answered what the guard cannot read: $row"; return 0 ;;
    esac
    if [ "$streaming" -gt 0 ]; then want=$names; else want=""; fi
    if [ "$current" != "$want" ]; then
        escaped=$(printf '%s' "$want" | sed "s/'/''/g")
        if ! psql -h "$host" -p "$port" -U "$user" -d postgres -XAtq -v ON_ERROR_STOP=1 \
            -c "ALTER SYSTEM SET synchronous_standby_names = '$escaped'" \
            -c "SELECT pg_reload_conf()" > /dev/null 2>"$errors"; then
            note "$1" "not set ($(tail -n 1 "$errors"))"
            return 0
        fi
        log "$1: primary with $streaming standby streaming: synchronous_standby_names = '$want'"
    fi
    note "$1" "primary, $streaming standby streaming"
}

log "guarding $POSTGRES_SYNC_SERVERS every ${interval} s (synchronous: $names)"
while :; do
    for server in $POSTGRES_SYNC_SERVERS; do
        guard "$server"
    done
    # A health check's sign of life, where one is asked for.
    [ -z "${POSTGRES_SYNC_BEAT:-}" ] || touch "$POSTGRES_SYNC_BEAT"
    sleep "$interval"
done
