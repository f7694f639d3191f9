#!/bin/sh
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): creates the
# application role the API connects as. It owns its database and is neither superuser nor
# CREATEROLE/CREATEDB, like the native target's role. The password comes from a secret file.
set -eu
app_password=$(cat /run/secrets/postgres_app_password)
psql -v ON_ERROR_STOP=1 -v pw="$app_password" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE chatsdk LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
ALTER DATABASE chatsdk OWNER TO chatsdk;
ALTER ROLE chatsdk SET statement_timeout = '30s';
ALTER ROLE chatsdk SET idle_in_transaction_session_timeout = '60s';
SQL
