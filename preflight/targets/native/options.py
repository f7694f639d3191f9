"""How a native target is asked to run (NativeOptions), with the deliberately broken variants that
only tests ask for grouped apart (NativeTestOptions)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from preflight.postgres_bin import PG_BIN


@dataclass(frozen=True)
class NativeTestOptions:
    """Variants of the bundled system's configuration, for showing that probes and drills catch a
    deliberately broken one. The defaults are the hardened system."""

    # Another copy of system/nginx (the edge), of system/web (the web client the edge serves)
    # and of system/monitoring (Prometheus, Alertmanager and the exporters).
    edge_template_dir: Path | None = None
    web_dir: Path | None = None
    monitoring_dir: Path | None = None
    # Extra `name=value` PostgreSQL settings (they win over the defaults) and extra redis.conf
    # lines (the later of two lines wins in redis.conf).
    postgres_settings: Sequence[str] = ()
    redis_settings: Sequence[str] = ()
    # What settings cannot express: the pg_hba.conf password method (e.g. "md5"), PostgreSQL
    # without TLS (plain `host` lines, a DSN without sslmode), and SQL run by the superuser in the
    # app database after the app role exists (e.g. "ALTER ROLE chatsdk SUPERUSER").
    postgres_auth_method: str = "scram-sha-256"
    postgres_tls: bool = True
    postgres_sql: Sequence[str] = ()
    # The migration the rollout drills' rehearsal candidate ships (releases.py); None: an
    # expand-only one. Tests seed one the previous release cannot live with.
    rehearsal_migration: str | None = None
    # CHATSDK_BACKUP_* and other settings of the backup job on top of the target's.
    backup_env: Mapping[str, str] = field(default_factory=dict)
    # The workers' DSN names the primary alone, not the standby after it: they cannot follow a
    # failover (the failover drill turns red).
    workers_primary_only: bool = False
    # No synchronous replication guard beside the pair (system/deploy/images/postgres/
    # sync-guard.sh): commits return before the standby has them, and the failover drill, which
    # kills the primary while its standby is behind, finds them lost.
    asynchronous_replication: bool = False


@dataclass(frozen=True)
class NativeOptions:
    workers: int = 2
    edge_port: int | None = None  # None: a free port
    http_port: int | None = None
    ready_timeout: float = 30.0
    nginx_workers: int = 1
    # Per NGINX worker: connections (two per proxied WebSocket) and open files; the shipped
    # edge's values unless a bench raises them (bench/sockets.py).
    nginx_worker_connections: int = 4096
    nginx_rlimit_nofile: int = 8192
    pg_bin: Path = PG_BIN
    # The edge's per-client-IP limits. Test suites that drive the API hard from one loopback
    # address raise them; the limits themselves are tested with the defaults.
    api_rate_per_s: int = 100
    ws_rate_per_s: int = 50
    # Extra CHATSDK_* settings for the workers (e.g. a short webhook backoff in tests).
    worker_env: Mapping[str, str] = field(default_factory=dict)
    # Prometheus, Alertmanager and the node, PostgreSQL and Redis exporters next to the system
    # (observability.py). Off by default: test suites don't pay for it.
    observability: bool = False
    # The bundled system's demo sign-in (CHATSDK_DEMO, chatsdk/demo.py), which the web client and
    # its browser journeys (checks/testing/test_browser_journeys.py) sign in with; a production
    # deployment never enables it.
    demo: bool = True
    # Scheduled backups (chatsdk.backup): a `backup` child takes one into <dir>/backups at once
    # and then one every 12 hours; start() returns after the first. Off by default: test suites
    # don't pay for it (`pytest checks/` turns it on).
    backups: bool = False
    # One backup directory of a chatsdk.backup repository, restored into the new target's empty
    # database and upload store before its API workers start (NativeTarget.restore).
    restore_from: Path | None = None
    # Restart API workers that exit unasked, as systemd's Restart=on-failure would
    # (supervisor.py). Off only to show that APP-SUPERVISED's probe fails without it.
    supervise: bool = True
    # A streaming standby of PostgreSQL beside the primary (standby.py), which the workers'
    # DSN names second. Off only to show that INF-DB-REPLICA's probe fails without it.
    standby: bool = True
    log: Callable[[str], None] = field(default=lambda _msg: None)
    test: NativeTestOptions = field(default_factory=NativeTestOptions)
