#!/bin/sh
# First start of an empty data directory: initdb with the superuser's password from
# POSTGRES_PASSWORD_FILE, create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh and *.sql
# (these in POSTGRES_DB), in name order, against a server that listens on its Unix socket only,
# then start for real. Later starts go straight to the server. Clients on the network
# authenticate with scram-sha-256; replication connections (a standby's pg_basebackup and
# streaming) too. With POSTGRES_TLS_CERT_FILE and POSTGRES_TLS_KEY_FILE (a certificate chain and
# its key, e.g. secret files), the server speaks TLS with them and refuses network clients that
# do not use it (hostssl only).
#
# Standby mode (POSTGRES_PRIMARY_HOST set): the first start of an empty data directory copies
# the primary instead of initdb: the replication slot POSTGRES_STANDBY_SLOT is made on the
# primary if missing, then `pg_basebackup -R` through it as POSTGRES_REPLICATION_USER (password
# from POSTGRES_REPLICATION_PASSWORD_FILE) writes the copy with its primary_conninfo (over TLS
# where the primary offers it: libpq's default sslmode=prefer), and the server starts as a hot
# standby streaming from the primary. `pg_promote()` makes it a primary.
#
# Operator command `rejoin-as-standby` (POSTGRES_PRIMARY_HOST naming the current primary; the
# server of this data directory stopped): empties the data directory and copies the primary into
# it as above, then exits; the next start of the server runs it as a standby of that primary.
# This rebuilds a lost primary after a failover (system/docs/operations/replication.md), e.g.
#   docker-compose run --rm -e POSTGRES_PRIMARY_HOST=postgres-standby postgres rejoin-as-standby
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=postgres}"
export POSTGRES_USER POSTGRES_DB
copy_primary() {
    pwfile=${POSTGRES_REPLICATION_PASSWORD_FILE:?POSTGRES_REPLICATION_PASSWORD_FILE must name the replication password file}
    slot=${POSTGRES_STANDBY_SLOT:-standby_1}
    conninfo="host=$POSTGRES_PRIMARY_HOST port=${POSTGRES_PRIMARY_PORT:-5432} user=${POSTGRES_REPLICATION_USER:-chatsdk_replicator} application_name=$(hostname)"
    PGPASSWORD=$(cat "$pwfile")
    export PGPASSWORD
    until pg_isready -q -h "$POSTGRES_PRIMARY_HOST" -p "${POSTGRES_PRIMARY_PORT:-5432}"; do
        echo "postgres-entrypoint: waiting for the primary $POSTGRES_PRIMARY_HOST"
        sleep 1
    done
    pg_receivewal -d "$conninfo" --slot="$slot" --create-slot --if-not-exists
    pg_basebackup -D "$PGDATA" -d "$conninfo" --write-recovery-conf --wal-method=stream \
        --slot="$slot" --checkpoint=fast --no-password
    unset PGPASSWORD
}
if [ "${1:-}" = rejoin-as-standby ]; then
    : "${POSTGRES_PRIMARY_HOST:?rejoin-as-standby: POSTGRES_PRIMARY_HOST must name the current primary}"
    echo "postgres-entrypoint: emptying $PGDATA to copy $POSTGRES_PRIMARY_HOST into it"
    find "$PGDATA" -mindepth 1 -delete
    copy_primary
    echo "postgres-entrypoint: $PGDATA is a standby of $POSTGRES_PRIMARY_HOST; start the server"
    exit 0
fi
if [ "${1:-}" = postgres ] && [ -n "${POSTGRES_PRIMARY_HOST:-}" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    copy_primary
fi
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE must name the superuser password file}
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
    network=host
    [ -z "${POSTGRES_TLS_CERT_FILE:-}" ] || network=hostssl
    {
        echo "$network all all all scram-sha-256"
        echo "$network replication all all scram-sha-256"
    } >> "$PGDATA/pg_hba.conf"
    PGPASSWORD=$(cat "$pwfile")
    export PGPASSWORD PGHOST=/run/postgresql
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sh) echo "postgres-entrypoint: running $script"; sh "$script" ;;
            *.sql)
                echo "postgres-entrypoint: running $script"
                psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$script"
                ;;
        esac
    done
    pg_ctl -D "$PGDATA" -w -m fast stop
    unset PGPASSWORD PGHOST
fi
if [ "${1:-}" = postgres ]; then
    shift
    if [ -n "${POSTGRES_TLS_CERT_FILE:-}" ]; then
        # PostgreSQL reads a key only its own user can read: a copy in the data directory.
        install -m 0600 "${POSTGRES_TLS_KEY_FILE:?POSTGRES_TLS_KEY_FILE must name the key}" \
            "$PGDATA/server.key"
        install -m 0644 "$POSTGRES_TLS_CERT_FILE" "$PGDATA/server.crt"
        set -- -c ssl=on -c ssl_cert_file="$PGDATA/server.crt" \
            -c ssl_key_file="$PGDATA/server.key" -c ssl_min_protocol_version=TLSv1.2 "$@"
    fi
    exec postgres -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"
fi
exec "$@"
