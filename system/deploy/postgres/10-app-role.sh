#!/bin/sh
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): creates the
# application role the API connects as, and the backup job's role. The app role owns its
# database and nothing more (no superuser, CREATEROLE, CREATEDB or replication), with a bounded
# number of connections and timeouts so no session can hang forever: the same role as the
# native target's. The backup role reads every table (pg_read_all_data) and may open a
# replication connection (pg_basebackup), nothing more. The standby streams as the replication
# role (REPLICATION and LOGIN only). 20-monitoring.sql runs next. The passwords come from secret
# files.
set -eu
app_password=$(cat /run/secrets/postgres_app_password)
backup_password=$(cat /run/secrets/postgres_backup_password)
replication_password=$(cat /run/secrets/postgres_replication_password)
psql -v ON_ERROR_STOP=1 -v pw="$app_password" -v backup_pw="$backup_password" \
    -v replication_pw="$replication_password" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE chatsdk LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    CONNECTION LIMIT 150 PASSWORD :'pw';
ALTER ROLE chatsdk SET statement_timeout = '30s';
ALTER ROLE chatsdk SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE chatsdk SET lock_timeout = '10s';
ALTER DATABASE chatsdk OWNER TO chatsdk;
REVOKE ALL ON DATABASE chatsdk FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO chatsdk;
CREATE ROLE chatsdk_backup LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE
    IN ROLE pg_read_all_data PASSWORD :'backup_pw';
GRANT CONNECT ON DATABASE chatsdk TO chatsdk_backup;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE ROLE chatsdk_replicator LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE
    PASSWORD :'replication_pw';
SQL
