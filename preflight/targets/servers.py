"""How the databases of the system under test are configured: one definition for every target
that starts them (native processes, containers), so the targets cannot drift apart."""

from __future__ import annotations

from pathlib import Path

APP_DB = "chatsdk"
APP_ROLE = "chatsdk"
# The role a standby streams as (pg_basebackup, then walreceiver): REPLICATION and LOGIN only.
REPLICATION_ROLE = "chatsdk_replicator"
# The replication slot of the one standby, on the primary: WAL the standby has not received is
# kept (at most max_slot_wal_keep_size) however long it is away.
STANDBY_SLOT = "standby_1"
# The WAL senders of a primary's standbys, which the failover drill stops for a while: a standby
# reports the position it replayed, a base backup's WAL stream (the backup job, a standby still
# being copied) none.
HELD_SENDERS = "SELECT pid FROM pg_stat_replication WHERE replay_lsn IS NOT NULL"

# Server settings beyond the defaults, as `-c name=value` pairs for `postgres`.
POSTGRES_SETTINGS = (
    "password_encryption=scram-sha-256",
    "fsync=on",
    "full_page_writes=on",
    "synchronous_commit=on",
    "max_connections=200",
    # Query statistics (PERF-DB-SLOW-QUERIES): the app role reads its own statements' figures.
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=top",
    # Streaming replication to one standby, synchronous while it streams (the guard beside the
    # pair sets synchronous_standby_names; system/docs/operations/replication.md): a slot holds
    # the WAL it still needs, bounded so a standby gone for good cannot fill the primary's disk;
    # a standby retries a lost primary every second.
    "max_slot_wal_keep_size=1GB",
    "wal_retrieve_retry_interval=1s",
)

# TLS for every TCP connection (SEC-DB-TLS); the certificate and key files are named by the
# target that starts the server. TLS 1.2 is the floor, as at the edge.
POSTGRES_TLS_SETTINGS = ("ssl=on", "ssl_min_protocol_version=TLSv1.2")

# What the primary knows of its standbys, for the application role: the function the
# deployment's provisioning makes (system/deploy/postgres/20-monitoring.sql says why), run by psql
# as the superuser in the application database.
MONITORING_SQL = (
    Path(__file__).resolve().parents[2] / "system" / "deploy" / "postgres" / "20-monitoring.sql"
).read_text()

# The application role owns its database and nothing more: no superuser, no CREATEROLE, no
# CREATEDB. Timeouts are set on the role so no session of the app can hang forever. Run by psql
# as the superuser with the password in the psql variable `pw` (quoted by psql, :'pw').
APP_ROLE_SQL = f"""
CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION
    CONNECTION LIMIT 150 PASSWORD :'pw';
ALTER ROLE {APP_ROLE} SET statement_timeout = '30s';
ALTER ROLE {APP_ROLE} SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE {APP_ROLE} SET lock_timeout = '10s';
CREATE DATABASE {APP_DB} OWNER {APP_ROLE} ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE {APP_DB} FROM PUBLIC;
\\c {APP_DB}
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO {APP_ROLE};
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
{MONITORING_SQL}"""

# The replication role, run like APP_ROLE_SQL with its password in the psql variable `rpw`.
REPLICATION_ROLE_SQL = f"""
CREATE ROLE {REPLICATION_ROLE} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE
    PASSWORD :'rpw';
"""


def postgres_args() -> list[str]:
    return [arg for setting in POSTGRES_SETTINGS for arg in ("-c", setting)]


def pg_hba(method: str = "scram-sha-256", *, tls: bool = True) -> str:
    """pg_hba.conf: loopback only, one password method, and TCP only over TLS (`hostssl`; a
    plaintext TCP connection finds no line and is refused)."""
    host = "hostssl" if tls else "host"
    lines = ["# TYPE  DATABASE     USER  ADDRESS        METHOD"]
    for database in ("all", "replication"):
        lines += [
            f"local    {database:<12} all                  {method}",
            f"{host:<8} {database:<12} all   127.0.0.1/32   {method}",
            f"{host:<8} {database:<12} all   ::1/128        {method}",
        ]
    return "\n".join(lines) + "\n"


def redis_conf(password: str, *extra: str) -> str:
    """A redis.conf (a file, so the password is not visible in `ps`)."""
    lines = [
        "protected-mode yes",
        f"requirepass {password}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        # Chosen, not defaulted: Redis holds rate-limit buckets and pub/sub here; losing keys
        # silently would be worse than refusing a write.
        "maxmemory 256mb",
        "maxmemory-policy noeviction",
        # No replicas to wait for: a snapshot over the replication protocol (the backup job's
        # `redis-cli --rdb`) starts at once instead of after the default 5 s.
        "repl-diskless-sync-delay 0",
        *extra,
    ]
    return "\n".join(lines) + "\n"
