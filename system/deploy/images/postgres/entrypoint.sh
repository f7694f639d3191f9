#!/bin/sh
# First start of an empty data directory: initdb with the superuser's password from
# POSTGRES_PASSWORD_FILE, create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh against a
# server that listens on its Unix socket only, then start for real. Later starts go straight
# to the server. Clients on the network authenticate with scram-sha-256; replication
# connections (a standby's pg_basebackup and streaming) too. With POSTGRES_TLS_CERT_FILE and
# POSTGRES_TLS_KEY_FILE (a certificate chain and its key, e.g. secret files), the server speaks
# TLS with them and refuses network clients that do not use it (hostssl only).
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=postgres}"
export POSTGRES_USER POSTGRES_DB
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
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$script" ] || continue
        echo "postgres-entrypoint: running $script"
        sh "$script"
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
