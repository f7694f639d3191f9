"""PostgreSQL of the target, as its application role sees it: version, the application database
and role, the server's hardening, the migration ledger, connection bounds and replication."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from checks._stores import is_loopback
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

MIN_VERSION_NUM = 160000
# Attributes that make a role more than an application's: it must have none of them.
PRIVILEGES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
ROLE_PRIVILEGES = f"SELECT {', '.join(PRIVILEGES)} FROM pg_roles WHERE rolname = current_user"  # noqa: S608 (constants)
MAX_REPLAY_LAG_S = 10.0
LEDGER_ROWS = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"


@pytest.mark.checklist("INF-DB-VERSION")
def test_postgres_is_version_16_or_later(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """An old major version lacks fixes and features the schema relies on."""
    shown = target.pg.show("server_version", "server_version_num")
    evidence.note(f"PostgreSQL at {target.pg.where} reports {shown['server_version']}")
    assert int(shown["server_version_num"]) >= MIN_VERSION_NUM, (
        f"PostgreSQL at {target.pg.where} must be version 16 or later "
        f"(got {shown['server_version']})"
    )


def _role_privileges(target: ProbeTarget) -> list[str]:
    rows = target.pg.fetch(ROLE_PRIVILEGES)
    return [p for p in PRIVILEGES if rows[0][p]]


# PostgreSQL server hardening (after the CIS PostgreSQL Benchmark: a least-privileged role,
# loopback only, durability settings) has no item of its own; it is decided here, next to "the
# application database exists", one case per setting, so a deviation names its setting.
# password_encryption/pg_hba live in SEC-PASSWORDS-STRONG, the role's timeouts in INF-DB-POOL.
HARDENING = ["database-and-role", "role-least-privileged", "durability"]


@pytest.mark.checklist("INF-DB-EXISTS")
@pytest.mark.parametrize("case", HARDENING)
def test_application_database_exists_with_a_hardened_server(
    target: ProbeTarget, evidence: EvidenceLog, case: str
) -> None:
    """The API cannot serve without its database; a privileged or non-durable one loses data."""
    where = target.pg.where
    if case == "database-and-role":
        dsn = urlsplit(target.pg_dsn)
        wanted = (unquote(dsn.path.lstrip("/")), unquote(dsn.username or ""))
        row = target.pg.fetch("SELECT current_database() AS db, current_user AS role")[0]
        got = (row["db"], row["role"])
        evidence.note(f"connected to {where} as {got[1]}, database {got[0]}")
        assert got == wanted, f"the DSN's database and role at {where} must be {wanted} (got {got})"
    elif case == "role-least-privileged":
        held = _role_privileges(target)
        evidence.note(f"application role privileges beyond LOGIN: {held or 'none'}")
        assert not held, (
            f"the application role at {where} must hold none of {', '.join(PRIVILEGES)} "
            f"(holds {', '.join(held)})"
        )
    else:
        shown = target.pg.show("fsync", "full_page_writes", "synchronous_commit", "data_checksums")
        evidence.note(", ".join(f"{k} = {v}" for k, v in shown.items()))
        wrong = {k: v for k, v in shown.items() if v == "off"}
        assert not wrong, (
            f"PostgreSQL at {where} must run with fsync, full_page_writes, synchronous_commit and "
            f"data_checksums on (got {', '.join(f'{k} = {v}' for k, v in wrong.items())})"
        )


@pytest.mark.checklist("INF-DB-EXISTS")
def test_a_database_on_the_api_host_listens_on_loopback_only(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A database listening beyond loopback is one firewall rule away from every network."""
    where = target.pg.where
    listen = target.pg.show("listen_addresses")["listen_addresses"]
    addresses = [a.strip() for a in listen.split(",") if a.strip()]
    evidence.note(f"listen_addresses = {listen!r}")
    over = target.info.stores.network_addresses.get("postgres")
    if over is not None or not is_loopback(urlsplit(target.pg_dsn).hostname or ""):
        pytest.skip(
            f"the API reaches PostgreSQL at {over or where} over a network, where it must "
            "listen; whether it answers from outside is INF-NET-FIREWALL's"
        )
    assert addresses, f"PostgreSQL at {where} must listen somewhere (listen_addresses = '')"
    assert all(is_loopback(a) for a in addresses), (
        f"PostgreSQL at {where} must listen on loopback only (listen_addresses = {listen!r})"
    )


@pytest.mark.checklist("INF-DB-MIGRATED")
def test_every_shipped_migration_is_applied_unchanged(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A half-migrated schema breaks requests in ways tests did not see."""
    shipped, disagreeing = release_migrations(target.metrics.runtime(evidence))
    rows = target.pg.fetch(LEDGER_ROWS)
    applied = {int(r["version"]): str(r["checksum"]) for r in rows}
    evidence.note(f"the workers' release {sorted(shipped)}; applied {sorted(applied)}")
    missing = [f"{v:04d}_{name}" for v, (name, _c) in shipped.items() if v not in applied]
    changed = [
        f"{v:04d}_{name}"
        for v, (name, checksum) in shipped.items()
        if v in applied and applied[v] != checksum
    ]
    unknown = [f"{v:04d}" for v in applied if v not in shipped]
    problems = [
        f"{what}: {', '.join(names)}"
        for what, names in (
            ("workers disagree on", disagreeing),
            ("not applied", missing),
            ("changed after applying", changed),
            ("applied but not shipped", unknown),
        )
        if names
    ]
    assert not problems, (
        f"every migration of the release the API workers run must be applied unchanged at "
        f"{target.pg.where} (got {'; '.join(problems)})"
    )


def release_migrations(
    reports: dict[str, dict[str, Any]],
) -> tuple[dict[int, tuple[str, str]], list[str]]:
    """version -> (name, checksum) of the migrations the workers' release expects (their
    runtime reports), and the versions two workers name differently."""
    shipped: dict[int, tuple[str, str]] = {}
    disagreeing: list[str] = []
    for report in reports.values():
        for migration in report["migrations"]["release"]:
            version = int(migration["version"])
            entry = (str(migration["name"]), str(migration["checksum"]))
            if shipped.setdefault(version, entry) != entry and f"{version:04d}" not in disagreeing:
                disagreeing.append(f"{version:04d}")
    return shipped, disagreeing


@pytest.mark.checklist("INF-DB-POOL")
@pytest.mark.parametrize("case", ["connections-bounded", "session-timeouts"])
def test_database_connections_are_bounded(
    target: ProbeTarget, evidence: EvidenceLog, case: str
) -> None:
    """Unbounded or stuck connections exhaust PostgreSQL and fail every request at once."""
    where = target.pg.where
    if case == "connections-bounded":
        row = target.pg.fetch(
            """SELECT r.rolconnlimit AS role_limit,
                      current_setting('max_connections')::int AS max_connections,
                      current_setting('superuser_reserved_connections')::int AS reserved,
                      (SELECT count(*) FROM pg_stat_activity
                        WHERE usename = current_user AND pid <> pg_backend_pid()) AS open
                 FROM pg_roles r WHERE r.rolname = current_user""",
        )[0]
        usable = row["max_connections"] - row["reserved"]
        evidence.figure("application role connection limit", row["role_limit"])
        evidence.figure("usable max_connections", usable)
        evidence.figure("open application connections", row["open"])
        limit = row["role_limit"]
        assert 0 <= limit < usable, (
            f"the application role at {where} must have a connection limit below the "
            f"{usable} usable max_connections (got {'none' if limit < 0 else limit})"
        )
        assert 0 < row["open"] <= limit, (
            f"the application at {where} must hold between 1 and {limit} pooled connections "
            f"(got {row['open']})"
        )
    else:
        shown = target.pg.show("statement_timeout", "idle_in_transaction_session_timeout")
        evidence.note(", ".join(f"{k} = {v}" for k, v in shown.items()))
        unset = [k for k, v in shown.items() if v in ("0", "0ms")]
        assert not unset, (
            f"the application role at {where} must have {' and '.join(unset)} set so a stuck "
            f"session cannot hold a pooled connection forever (got 0)"
        )


@pytest.mark.checklist("INF-DB-REPLICA")
def test_a_streaming_replica_is_connected(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Without a replica, losing the primary means restoring from backup with data loss."""
    # Neither the checklist nor a target says HA is not required for this system (INF-HA-NODES
    # requires redundancy), so a primary without a standby fails rather than skips. The primary's
    # pg_stat_replication as the API workers report it (their runtime report): the application
    # role may not read the replication role's rows of that view itself.
    for worker, report in target.metrics.runtime(evidence).items():
        replication = report["dependencies"]["database"].get("replication")
        assert replication is not None, (
            f"worker {worker} must report its primary's replication (its runtime report has none)"
        )
        assert "error" not in replication, (
            f"worker {worker} could not read its primary's replication: {replication['error']}"
        )
        standbys = replication["standbys"]
        streaming = [s for s in standbys if s["state"] == "streaming"]
        evidence.figure(f"{worker}: streaming standbys", len(streaming))
        evidence.note(f"{worker}: standbys of {target.pg.where}: {standbys}")
        assert streaming, (
            f"PostgreSQL at {target.pg.where} must have a streaming replica connected "
            f"(pg_stat_replication shows {standbys or 'none'})"
        )
        for standby in streaming:
            lag = standby["replay_lag_s"]
            if lag is not None:
                evidence.figure(f"{worker}: replay lag of {standby['name']}", lag, "s")
            assert lag is None or lag <= MAX_REPLAY_LAG_S, (
                f"replicas of {target.pg.where} must replay within {MAX_REPLAY_LAG_S:g} s "
                f"({standby['name']}: {lag} s)"
            )
