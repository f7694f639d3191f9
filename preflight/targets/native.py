"""The native target: real PostgreSQL, Redis, API workers and NGINX as child processes of this
one, on free loopback ports, in a private temp dir that is removed on stop."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from urllib.parse import quote

import redis

from preflight.errors import PreflightError, TargetUnavailable
from preflight.targets.backups import (
    BACKUP_MODULE,
    RETENTION_MODULE,
    backup_env,
    job_argv,
    restore_backup,
    scheduler,
    wait_first_backup,
)
from preflight.targets.base import ProcessJob, TargetInfo
from preflight.targets.edge import (
    EdgeConfig,
    nginx_command,
    reload_nginx,
    render_edge,
    validate_edge,
)
from preflight.targets.errortracker import ErrorTracker, start_error_tracker
from preflight.targets.observability import NAMES as OBSERVABILITY
from preflight.targets.observability import Observability, start_observability
from preflight.targets.pki import Pki, make_pki
from preflight.targets.procs import Child, RunAs, ensure_port_free, free_port, wait_until
from preflight.targets.releases import EXPAND_MIGRATION, build_candidate
from preflight.targets.servers import (
    APP_DB,
    APP_ROLE,
    APP_ROLE_SQL,
    POSTGRES_TLS_SETTINGS,
    pg_hba,
    postgres_args,
    redis_conf,
)

PG_BIN = Path(os.environ.get("PREFLIGHT_PG_BIN", "/usr/lib/postgresql/15/bin"))
TEMP_PREFIX = "preflight-native-"
EDGE_RELOAD_TIMEOUT_S = 10.0  # NGINX's old workers stop accepting within this after a SIGHUP
REJOIN_POLL_S = 0.1
WORKER_STOP_TIMEOUT_S = 20.0  # the worker's drain budget (15 s) and a margin to exit
SYSTEM_COMPONENTS = ("postgres", "redis", "nginx")  # besides the API workers "api-N"


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
    # Variants of the configuration, for showing that probes catch a deliberately broken one:
    # another copy of system/nginx, extra `name=value` PostgreSQL settings (they win over the
    # defaults), extra redis.conf lines (the later of two lines wins in redis.conf).
    edge_template_dir: Path | None = None
    postgres_settings: Sequence[str] = ()
    redis_settings: Sequence[str] = ()
    # Test variants of PostgreSQL that settings cannot express: the pg_hba.conf password method
    # (e.g. "md5"), PostgreSQL without TLS (plain `host` lines, a DSN without sslmode), and SQL run
    # by the superuser in the app database after the app role exists (e.g. "ALTER ROLE chatsdk
    # SUPERUSER"). The defaults are the hardened system.
    postgres_auth_method_variant: str = "scram-sha-256"
    postgres_tls_variant: bool = True
    postgres_sql_variant: Sequence[str] = ()
    # Prometheus, Alertmanager and the node, PostgreSQL and Redis exporters next to the system
    # (preflight/targets/observability.py), rendered from system/monitoring or from the copy in
    # `monitoring_dir` (tests seed broken ones). Off by default: test suites don't pay for it.
    observability: bool = False
    monitoring_dir: Path | None = None
    # The migration the rollout drills' rehearsal candidate ships (preflight/targets/releases.py);
    # None: an expand-only one. Tests seed one the previous release cannot live with.
    rehearsal_migration: str | None = None
    # The bundled system's demo sign-in (CHATSDK_DEMO, chatsdk/demo.py), which the web client and
    # its browser journeys (checks/testing/test_browser_journeys.py) sign in with; a production
    # deployment never enables it. `web_dir`: another copy of system/web for the edge to serve
    # (tests seed broken clients).
    demo: bool = True
    web_dir: Path | None = None
    # Scheduled backups (chatsdk.backup): a `backup` child takes one into <dir>/backups at once
    # and then one every 12 hours; start() returns after the first. `backup_env`:
    # CHATSDK_BACKUP_* and other settings of the backup job on top of the target's (tests seed
    # broken ones). Off by default: test suites don't pay for it (`pytest checks/` turns it on).
    backups: bool = False
    backup_env: Mapping[str, str] = field(default_factory=dict)
    # One backup directory of a chatsdk.backup repository, restored into the new target's empty
    # database and upload store before its API workers start (the restore drill).
    restore_from: Path | None = None
    log: Callable[[str], None] = field(default=lambda _msg: None)


@dataclass(frozen=True)
class WorkerReleases:
    """The native target's ReleaseControl (preflight/targets/base.py)."""

    target: NativeTarget
    workers: tuple[str, ...]

    def deploy(self, worker: str, release: Path | None) -> int | None:
        return self.target.deploy_worker(worker, release)

    def candidate(self) -> Path | None:
        """The rehearsal candidate (preflight/targets/releases.py), built in the target's dir."""
        assert self.target.dir is not None
        migration = self.target.options.rehearsal_migration
        return build_candidate(
            self.target.dir / "candidate", migration if migration is not None else EXPAND_MIGRATION
        )


@dataclass(frozen=True)
class ChildControl:
    """Drill control over one child process of the native target."""

    child: Child
    restart: Callable[[], None]
    # For an API worker: take it out of the edge's rotation (False) before a graceful stop and
    # put it back (True) once started, as a platform's deploy does. A kill is a crash: the
    # edge learns of it only from failed connections.
    route: Callable[[bool], None] | None = None

    def stop(self) -> int | None:
        if self.route is not None and self.child.running():
            self.route(False)
        return self.child.stop()

    def kill(self) -> None:
        self.child.kill()

    def start(self) -> None:
        if self.child.running():
            return
        self.restart()
        if self.route is not None:
            self.route(True)


def _executable(name: str, where: Path | None = None) -> str:
    path = str(where / name) if where else shutil.which(name, path=os.defpath + ":/usr/sbin")
    if not path or not os.access(path, os.X_OK):
        package = {"nginx": "nginx", "redis-server": "redis-server"}.get(name, "postgresql-15")
        raise TargetUnavailable(
            f"{name} not found{f' in {where}' if where else ''}; install it with "
            f"`apt-get install {package}` (or run `make run`, which does)"
        )
    return path


def sweep_stale_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove temp dirs left by launchers that were killed (SIGKILL leaves no chance to clean)."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        except PermissionError:
            continue
    return removed


class NativeTarget:
    """`with NativeTarget(opts) as info:` brings the whole stack up and always tears it down."""

    def __init__(self, options: NativeOptions | None = None) -> None:
        self.options = options or NativeOptions()
        self.dir: Path | None = None
        self.children: list[Child] = []
        self.deployed_at: float | None = None
        self._edge: Child | None = None
        self._edge_cfg: EdgeConfig
        self._upstream_of: dict[str, tuple[str, int]] = {}
        self._route_lock = threading.Lock()
        self._route_generation: dict[str, int] = {}
        self.info: TargetInfo | None = None
        self.started_in: float | None = None
        self._pg_password = secrets.token_urlsafe(24)
        self._app_password = secrets.token_urlsafe(24)
        self._redis_password = secrets.token_urlsafe(24)
        self.admin_key = secrets.token_urlsafe(32)
        self._jwt_secret = secrets.token_urlsafe(48)
        # How each child was started, so drills can start it again the same way.
        self._start_args: dict[str, tuple[dict[str, str] | None, RunAs | None]] = {}
        self._initdb_proc: subprocess.Popen[bytes] | None = None
        self._pg_tls_settings: tuple[str, ...] = ()
        # Direct URLs of the API workers (plain HTTP on loopback), for tests that must reach one
        # worker in particular, e.g. to prove fan-out across workers.
        self.worker_urls: list[str] = []
        # The backup job's environment (chatsdk.backup), and what a restore at start reported.
        self._backup_env: dict[str, str] = {}
        self.restore_report: dict[str, object] | None = None
        # CHATSDK_SENTRY_DSN of the workers: the error-tracking stand-in (errortracker.py).
        self._tracking_env: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TargetInfo:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TargetInfo:  # noqa: PLR0915 - the stack comes up in order, top to bottom
        opts = self.options
        if opts.workers < 1:
            raise PreflightError(f"--workers must be at least 1 (got {opts.workers})")
        t0 = time.monotonic()
        sweep_stale_dirs()
        https_port = self._port(opts.edge_port, "edge HTTPS", "--edge-port")
        http_port = self._port(opts.http_port, "edge plain-HTTP", "--http-port")
        pg_port, redis_port = free_port(), free_port()
        api_ports = [free_port() for _ in range(opts.workers)]

        pg_bin = {
            n: _executable(n, opts.pg_bin) for n in ("initdb", "postgres", "psql", "pg_isready")
        }
        _executable("nginx")  # fail before anything starts, with the install hint
        redis_bin = _executable("redis-server")

        self.dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        # 0711: the postgres user and nginx's unprivileged workers must traverse it (see
        # environment-notes: a 0700 parent makes request bodies > 16 KB fail with 500).
        self.dir.chmod(0o711)
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        logs = self.dir / "logs"
        logs.mkdir()

        opts.log("generating the private CA and the edge certificate")
        pki = make_pki(self.dir / "pki")

        self._initdb_proc = self._initdb(pg_bin["initdb"], logs)
        self._start_redis(redis_bin, redis_port, logs)
        tracker = self._start_error_tracker()
        dsn = f"postgresql://{APP_ROLE}:{quote(self._app_password)}@127.0.0.1:{pg_port}/{APP_DB}"
        if opts.postgres_tls_variant:
            # The workers verify the server's certificate against the per-run CA (SEC-DB-TLS).
            dsn += f"?sslmode=verify-full&sslrootcert={quote(str(pki.ca_cert))}"
        redis_url = f"redis://:{quote(self._redis_password)}@127.0.0.1:{redis_port}/0"
        # The superuser's DSN, for the backup job (pg_dump, pg_basebackup) and a restore.
        superuser_dsn = dsn.replace(
            f"{APP_ROLE}:{quote(self._app_password)}@", f"postgres:{quote(self._pg_password)}@", 1
        )
        # Workers start before the databases are ready on purpose: they connect with backoff.
        # Not so when a backup is restored first: they would migrate the empty database.
        opts.log(f"starting {opts.workers} API worker(s)")
        edge_url = f"https://127.0.0.1:{https_port}"
        self.worker_urls = [f"http://127.0.0.1:{p}" for p in api_ports]

        def start_workers() -> list[Child]:
            return [
                self._start_worker(i, port, dsn, redis_url, logs, origin=edge_url)
                for i, port in enumerate(api_ports)
            ]

        workers = start_workers() if opts.restore_from is None else []

        self._edge_cfg = EdgeConfig(
            workdir=self.dir / "edge",
            https_port=https_port,
            http_port=http_port,
            upstreams=[("127.0.0.1", p) for p in api_ports],
            pki=pki,
            worker_processes=opts.nginx_workers,
            worker_connections=opts.nginx_worker_connections,
            worker_rlimit_nofile=opts.nginx_rlimit_nofile,
            api_rate_per_s=opts.api_rate_per_s,
            ws_rate_per_s=opts.ws_rate_per_s,
            api_burst=max(50, opts.api_rate_per_s // 2),
            ws_burst=max(25, opts.ws_rate_per_s // 2),
            web_source=opts.web_dir,
        )
        self._upstream_of = {f"api-{i}": ("127.0.0.1", p) for i, p in enumerate(api_ports)}
        edge_conf = render_edge(self._edge_cfg, template_dir=opts.edge_template_dir)
        validate_edge(edge_conf)
        edge = Child("nginx", nginx_command(edge_conf), logs / "nginx.log", signal.SIGQUIT, 10.0)
        self._edge = self._spawn(edge)

        opts.log("initialising PostgreSQL")
        self._finish_initdb(self._initdb_proc)
        self._configure_postgres(pki)
        self._start_postgres(pg_bin["postgres"], pg_bin["pg_isready"], pg_port, logs)
        self._create_app_role(pg_bin["psql"], pg_port)
        if opts.restore_from is not None:
            opts.log(f"restoring backup {opts.restore_from.name}")
            self.restore_report = restore_backup(
                opts.restore_from,
                superuser_dsn=superuser_dsn,
                upload_dir=self.dir / "uploads",
                pg_bin=opts.pg_bin,
                log=logs / "restore.log",
            )
            workers = start_workers()

        ca = ssl.create_default_context(cafile=str(pki.ca_cert))
        opts.log("waiting for the API workers and the edge to be ready")
        for child, port in zip(workers, api_ports, strict=True):
            url = f"http://127.0.0.1:{port}/v1/health/ready"
            wait_until(child, lambda u=url: _http_ok(u), opts.ready_timeout, "ready")  # type: ignore[misc]
        wait_until(
            edge, lambda: _http_ok(f"{edge_url}/v1/health/ready", ca), opts.ready_timeout, "ready"
        )
        self.deployed_at = time.time()  # the release is serving: deployed
        tracker.wait_ready(opts.ready_timeout)
        observability: Observability | None = None
        if opts.observability:
            opts.log("starting Prometheus, Alertmanager and the exporters")
            observability = start_observability(
                self.dir / "observability",
                spawn=lambda child, env: self._spawn(child, env=env),
                api_targets=[f"127.0.0.1:{p}" for p in api_ports],
                postgres_dsn=dsn,
                redis_address=f"redis://127.0.0.1:{redis_port}",
                redis_password=self._redis_password,
                monitoring_dir=opts.monitoring_dir,
                ready_timeout=opts.ready_timeout,
            )
        backups = self._backups(superuser_dsn, redis_url, observability is not None, logs)
        self.started_in = time.monotonic() - t0

        controls = {
            c.name: ChildControl(
                c,
                self._restarter(c),
                route=partial(self.route_worker, c.name) if c.name.startswith("api-") else None,
            )
            for c in self.children
        }
        self.info = TargetInfo(
            name="native",
            kind="native",
            edge_url=edge_url,
            http_url=f"http://127.0.0.1:{http_port}",
            ca_file=pki.ca_cert,
            admin_key=self.admin_key,
            jwt_secret=self._jwt_secret,
            postgres_dsn=dsn,
            redis_url=redis_url,
            control=controls,
            metrics_urls=tuple(f"{url}/metrics" for url in self.worker_urls),
            log_files=(*sorted(logs.glob("*.log")), *sorted((self.dir / "edge").rglob("*.log"))),
            prometheus_url=observability.prometheus_url if observability else None,
            alertmanager_url=observability.alertmanager_url if observability else None,
            error_events=tracker.events,
            backup_dir=backups,
            upload_dir=self.dir / "uploads",
            releases=WorkerReleases(self, tuple(f"api-{i}" for i in range(opts.workers))),
            alert_routing=observability.routing if observability else None,
            processes=self.processes,
            deployed_at=self.deployed_at,
            jobs={
                "backup": ProcessJob("backup", job_argv(BACKUP_MODULE, "run"), self._backup_env),
                "retention": ProcessJob(
                    "retention", job_argv(RETENTION_MODULE), self._start_args["api-0"][0] or {}
                ),
            },
        )
        return self.info

    def stop(self) -> None:
        """Stop in dependency order (monitoring, edge, API, Redis, PostgreSQL), then remove the
        temp dir."""
        order = {
            "nginx": 0,
            "redis": 2,
            "postgres": 3,
            "errortracker": 4,  # last: it receives what the draining workers still report
            **dict.fromkeys(OBSERVABILITY, -1),
        }
        if self._initdb_proc is not None and self._initdb_proc.poll() is None:
            # A start that failed early may leave initdb running; removing the dir under it
            # would let it re-create part of the tree after the rmtree.
            self._initdb_proc.kill()
            self._initdb_proc.wait(timeout=10)
        self._initdb_proc = None
        api = [c for c in self.children if c.name.startswith("api-")]
        for c in api:  # SIGTERM all workers first so they drain in parallel
            c.expected_exit = True
            c.signal(signal.SIGTERM)
        for child in sorted(self.children, key=lambda c: order.get(c.name, 1)):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def crashed(self) -> list[Child]:
        """Children that exited without being asked to."""
        return [c for c in self.children if not c.expected_exit and not c.running()]

    def pids(self) -> list[int]:
        return [c.pid for c in self.children if c.proc is not None]

    def processes(self) -> dict[str, int]:
        """The main process of each running component of the system (TargetInfo.processes):
        the API workers, PostgreSQL, Redis and NGINX, not the harness's helpers (error tracker,
        monitoring, backup scheduler), which a deployment runs elsewhere."""
        return {
            c.name: c.pid
            for c in self.children
            if c.running() and (c.name in SYSTEM_COMPONENTS or c.name.startswith("api-"))
        }

    # -- components --------------------------------------------------------------------------

    def _port(self, wanted: int | None, what: str, option: str) -> int:
        if wanted is None:
            return free_port()
        ensure_port_free(wanted, what, option)
        return wanted

    def _spawn(
        self, child: Child, env: dict[str, str] | None = None, run_as: RunAs | None = None
    ) -> Child:
        child.start(env=env, run_as=run_as)
        self.children.append(child)
        self._start_args[child.name] = (env, run_as)
        return child

    def _restarter(self, child: Child) -> Callable[[], None]:
        def restart() -> None:
            # Looked up at restart: a worker put on another release restarts on that release.
            env, run_as = self._start_args[child.name]
            child.start(env=env, run_as=run_as)

        return restart

    def deploy_worker(self, name: str, release: Path | None) -> int | None:
        """Stop API worker `name` gracefully and start it on `release` (a directory holding a
        `chatsdk` package, first on its PYTHONPATH; None: the installed one). The old process's
        exit code."""
        child = next((c for c in self.children if c.name == name), None)
        if child is None or not name.startswith("api-"):
            raise PreflightError(f"no API worker named {name} in this target")
        env, run_as = self._start_args[name]
        env = {k: v for k, v in (env or {}).items() if k != "PYTHONPATH"}
        if release is not None:
            env["PYTHONPATH"] = str(release)
        if child.running():
            self.route_worker(name, serving=False)
        code = child.stop()
        self._start_args[name] = (env, run_as)
        child.start(env=env, run_as=run_as)
        self.route_worker(name, serving=True)
        return code

    def route_worker(self, name: str, serving: bool) -> None:
        """Take API worker `name` out of the edge's rotation (`down`) or put it back.

        Out: before a graceful stop, as a platform removes a stopping pod from its endpoints.
        The edge is reloaded and this returns once every NGINX worker still accepting runs the
        new configuration, so no new request reaches a worker about to close its listener (a
        request that met the closing listener was lost as a 502: the rollout drill saw it).

        Back: from a watcher thread, once the started worker can serve, with no deadline, as a
        platform gates on readiness (a worker still connecting to its databases answers 503,
        and the edge does not retry a POST that got an answer). "Can serve" is ready, or its
        database and Redis answering with its migrations settled (see _can_serve). A worker
        started while a database is down comes back when the database does; if it is the only
        one left, as soon as it listens (the edge would otherwise have no server at all). A
        later route call for the same worker supersedes the watcher."""
        upstream = self._upstream_of.get(name)
        if upstream is None or self._edge is None or not self._edge.running():
            return
        with self._route_lock:
            generation = self._route_generation[name] = self._route_generation.get(name, 0) + 1
        if not serving:
            self._set_drained(upstream, True, name, generation)
            return
        threading.Thread(
            target=self._rejoin_when_serving,
            args=(name, upstream, generation),
            name=f"rejoin-{name}",
            daemon=True,
        ).start()

    def _rejoin_when_serving(self, name: str, upstream: tuple[str, int], generation: int) -> None:
        base = f"http://{upstream[0]}:{upstream[1]}"
        while self._edge is not None and self._edge.running():
            with self._route_lock:
                if self._route_generation.get(name) != generation:
                    return
                alone = set(self._upstream_of.values()) <= self._edge_cfg.drained
            if _can_serve(f"{base}/v1/health/ready") or (
                alone and _http_ok(f"{base}/v1/health/live")
            ):
                self._set_drained(upstream, False, name, generation)
                return
            time.sleep(REJOIN_POLL_S)

    def _set_drained(
        self, upstream: tuple[str, int], drained: bool, name: str, generation: int
    ) -> None:
        """Render the edge with `upstream` drained or not and reload it, unless a newer route
        call for the worker came first; returns once the reload took effect."""
        with self._route_lock:
            if self._route_generation.get(name) != generation or self._edge is None:
                return
            now = set(self._edge_cfg.drained)
            if (upstream in now) == drained:
                return
            if drained and set(self._upstream_of.values()) - now == {upstream}:
                # The last one serving: taking it out would leave the edge no server at all.
                return
            (now.add if drained else now.discard)(upstream)
            self._edge_cfg = replace(self._edge_cfg, drained=frozenset(now))
            render_edge(self._edge_cfg, template_dir=self.options.edge_template_dir)
            if not reload_nginx(self._edge.pid, EDGE_RELOAD_TIMEOUT_S):
                self.options.log(
                    f"the edge's reload (upstream {upstream[0]}:{upstream[1]} "
                    f"{'down' if drained else 'back'}) did not take effect within "
                    f"{EDGE_RELOAD_TIMEOUT_S:g} s"
                )

    def _pg_dirs(self) -> tuple[Path, RunAs | None]:
        assert self.dir is not None
        pg_dir = self.dir / "postgres"
        run_as = RunAs.system_user("postgres")
        if not pg_dir.exists():
            pg_dir.mkdir(mode=0o700)
            if run_as is not None:
                os.chown(pg_dir, run_as.uid, run_as.gid)
        return pg_dir, run_as

    def _initdb(self, initdb: str, logs: Path) -> subprocess.Popen[bytes]:
        pg_dir, run_as = self._pg_dirs()
        pwfile = pg_dir / "superuser.pw"
        pwfile.write_text(self._pg_password + "\n")
        pwfile.chmod(0o600)
        if run_as is not None:
            os.chown(pwfile, run_as.uid, run_as.gid)
        kwargs: dict[str, object] = {}
        if run_as is not None:
            kwargs = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
        log = (logs / "initdb.log").open("ab")
        with log:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                [
                    initdb,
                    "-D",
                    str(pg_dir / "data"),
                    "-U",
                    "postgres",
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--data-checksums",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **kwargs,
            )

    def _finish_initdb(self, proc: subprocess.Popen[bytes]) -> None:
        assert self.dir is not None
        code = proc.wait(timeout=120)
        (self.dir / "postgres" / "superuser.pw").unlink(missing_ok=True)
        if code != 0:
            log = self.dir / "logs" / "initdb.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise TargetUnavailable(f"PostgreSQL initdb failed with exit code {code}:\n{tail}")

    def _configure_postgres(self, pki: Pki) -> None:
        """pg_hba.conf (loopback, one password method, TCP over TLS only) and, with TLS, the
        edge's certificate (its SAN names 127.0.0.1) copied where the postgres user can read it."""
        pg_dir, run_as = self._pg_dirs()
        data = pg_dir / "data"
        opts = self.options
        owned = [data / "pg_hba.conf"]
        owned[0].write_text(
            pg_hba(opts.postgres_auth_method_variant, tls=opts.postgres_tls_variant)
        )
        self._pg_tls_settings = ()
        if opts.postgres_tls_variant:
            cert, key = data / "server-chain.pem", data / "server.key"
            shutil.copyfile(pki.server_chain, cert)
            shutil.copyfile(pki.server_key, key)
            key.chmod(0o600)  # PostgreSQL refuses a key file that others can read
            owned += [cert, key]
            self._pg_tls_settings = (
                *POSTGRES_TLS_SETTINGS,
                f"ssl_cert_file={cert}",
                f"ssl_key_file={key}",
            )
        if run_as is not None:
            for path in owned:
                os.chown(path, run_as.uid, run_as.gid)

    def _start_postgres(self, postgres: str, pg_isready: str, port: int, logs: Path) -> None:
        pg_dir, run_as = self._pg_dirs()
        child = Child(
            "postgres",
            [
                postgres,
                "-D",
                str(pg_dir / "data"),
                "-p",
                str(port),
                "-k",
                str(pg_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                *postgres_args(),
                *(arg for setting in self._pg_tls_settings for arg in ("-c", setting)),
                *(arg for setting in self.options.postgres_settings for arg in ("-c", setting)),
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_connections=off",
            ],
            logs / "postgres.log",
            signal.SIGINT,  # "fast" shutdown: roll back open transactions, checkpoint, exit
            30.0,
        )
        self._spawn(child, run_as=run_as)
        wait_until(
            child,
            lambda: (
                subprocess.run(
                    [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"], check=False
                ).returncode
                == 0
            ),
            self.options.ready_timeout,
            "accepting connections",
            interval=0.05,
        )

    def _create_app_role(self, psql: str, port: int) -> None:
        result = subprocess.run(
            [
                psql,
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"pw={self._app_password}",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ],
            input=APP_ROLE_SQL + "".join(f"{sql};\n" for sql in self.options.postgres_sql_variant),
            env={**os.environ, "PGPASSWORD": self._pg_password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise TargetUnavailable(
                f"PostgreSQL: creating the application role failed: {result.stderr.strip()}"
            )

    def _start_redis(self, redis_server: str, port: int, logs: Path) -> None:
        assert self.dir is not None
        rdir = self.dir / "redis"
        rdir.mkdir(mode=0o700)
        conf = rdir / "redis.conf"
        # In a file, not on the command line, so the password is not visible in `ps`.
        conf.write_text(
            redis_conf(
                self._redis_password,
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {rdir}",
                "daemonize no",
                'logfile ""',
                "loglevel warning",
                *self.options.redis_settings,
            )
        )
        conf.chmod(0o600)
        child = self._spawn(Child("redis", [redis_server, str(conf)], logs / "redis.log"))

        def pong() -> bool:
            try:
                client = redis.Redis(
                    host="127.0.0.1",
                    port=port,
                    password=self._redis_password,
                    socket_timeout=0.5,
                    socket_connect_timeout=0.5,
                )
                with client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(child, pong, self.options.ready_timeout, "answering PING")

    def _backups(self, superuser_dsn: str, redis_url: str, observability: bool, logs: Path) -> Path:
        """The backup repository and the backup job's environment; with `backups`, the schedule
        (its first backup is taken before the target counts as started)."""
        assert self.dir is not None
        repository = self.dir / "backups"
        repository.mkdir(mode=0o700, exist_ok=True)
        self._backup_env = backup_env(
            repository=repository,
            superuser_dsn=superuser_dsn,
            redis_url=redis_url,
            upload_dir=self.dir / "uploads",
            pg_bin=self.options.pg_bin,
            # node_exporter's textfile collector (observability.py) shows the backup gauges.
            textfile_dir=self.dir / "observability" / "textfile" if observability else None,
            extra=self.options.backup_env,
        )
        if self.options.backups:
            self.options.log("taking the first scheduled backup")
            child = self._spawn(scheduler(logs), env=self._backup_env)
            wait_first_backup(child, repository)
        return repository

    def _start_error_tracker(self) -> ErrorTracker:
        """The stand-in for Sentry's ingestion (errortracker.py): the workers report to it."""
        assert self.dir is not None
        self.options.log("starting the error-tracking stand-in")
        tracker = start_error_tracker(
            self.dir / "errortracker",
            spawn=lambda child, env: self._spawn(child, env=dict(env)),
            env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
        )
        self._tracking_env = {"CHATSDK_SENTRY_DSN": tracker.dsn}
        return tracker

    def _start_worker(
        self, index: int, port: int, dsn: str, redis_url: str, logs: Path, *, origin: str
    ) -> Child:
        assert self.dir is not None
        uploads = self.dir / "uploads"
        uploads.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "CHATSDK_HOST": "127.0.0.1",
            "CHATSDK_PORT": str(port),
            "CHATSDK_WORKER_ID": str(index),
            "CHATSDK_DATABASE_URL": dsn,
            "CHATSDK_REDIS_URL": redis_url,
            "CHATSDK_ADMIN_KEY": self.admin_key,
            "CHATSDK_JWT_SECRET": self._jwt_secret,
            "CHATSDK_UPLOAD_DIR": str(uploads),
            # Browsers reach the API through the edge only: that is the one allowed Origin.
            "CHATSDK_ALLOWED_ORIGINS": origin,
            "CHATSDK_DEMO": "1" if self.options.demo else "0",
            **self._tracking_env,
            **self.options.worker_env,
        }
        # The worker bounds its own drain (15 s, then exit 1 with the reason logged); SIGKILL only
        # after that, so a slow drain shows up as the worker's own report, not as a bare -9.
        child = Child(
            f"api-{index}",
            [sys.executable, "-m", "chatsdk"],
            logs / f"api-{index}.log",
            stop_timeout=WORKER_STOP_TIMEOUT_S,
        )
        return self._spawn(child, env=env)


def _can_serve(ready_url: str) -> bool:
    """The worker is ready, or it listens, has its database and Redis, and has settled its
    migrations: what it needs to answer requests. Settled includes `failed` (a changed
    migration file): such a worker serves and says so in its readiness, as it did before the
    edge learnt of restarts; `pending` only lasts until it reaches the database once."""
    try:
        with urllib.request.urlopen(ready_url, timeout=1.0) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return False
        checks = body.get("checks") or {}
        return bool(
            body.get("status") != "draining"
            and checks.get("database") == "ok"
            and checks.get("redis") == "ok"
            and checks.get("migrations") not in (None, "pending")
        )
    except (urllib.error.URLError, OSError):
        return False


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def native_target(options: NativeOptions | None = None) -> Iterator[NativeTarget]:
    target = NativeTarget(options)
    with target:
        yield target
