"""The native target: real PostgreSQL, Redis, API workers and NGINX as child processes of this
one, on free loopback ports, in a private temp dir that is removed on stop. This module wires the
parts together in the order the stack comes up and answers the target contract (base.Target)."""

from __future__ import annotations

import secrets
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from preflight.errors import PreflightError
from preflight.targets import base
from preflight.targets.base import Capability, ProcessJob, TargetDescription, TargetInfo, offered
from preflight.targets.cgroups import process_placement
from preflight.targets.describe import describe_running
from preflight.targets.errortracker import ErrorTracker, start_error_tracker
from preflight.targets.logstore import SHIPPER, STORE, NativeLogStore, start_native
from preflight.targets.native.backups import (
    BACKUP_MODULE,
    RETENTION_MODULE,
    backup_env,
    job_argv,
    restore_backup,
    scheduler,
    wait_first_backup,
)
from preflight.targets.native.health import http_ok
from preflight.targets.native.nginx import Edge, edge_config
from preflight.targets.native.observability import NAMES as OBSERVABILITY
from preflight.targets.native.observability import Observability, start_observability
from preflight.targets.native.options import NativeOptions
from preflight.targets.native.postgres import Postgres, Server, binaries
from preflight.targets.native.redis import RedisServer
from preflight.targets.native.releases import EXPAND_MIGRATION, WorkerReleases
from preflight.targets.native.standby import (
    GUARD,
    STANDBY,
    Failover,
    Standby,
    sync_guard,
    wait_synchronous,
)
from preflight.targets.native.supervisor import RestartPolicy, Supervisor, is_worker
from preflight.targets.native.workdir import executable, make_workdir, sweep_stale_dirs
from preflight.targets.native.workers import WorkerSettings, redeploy, start_worker
from preflight.targets.pki import Pki, make_pki
from preflight.targets.procs import Child, RunAs, ensure_port_free, free_port, wait_until

SYSTEM_COMPONENTS = ("postgres", "redis", "nginx")  # besides the API workers "api-N"
# Stopped in this order after every API worker got SIGTERM (any other child ranks 1).
STOP_ORDER = {
    **dict.fromkeys(OBSERVABILITY, -1),
    "nginx": 0,
    "redis": 2,
    GUARD: 1,  # before the servers it watches
    STANDBY: 2,  # before its primary, which would otherwise wait to send it its last WAL
    "postgres": 3,
    "errortracker": 4,  # it receives what the draining workers still report
    SHIPPER: 5,  # last: the central log store receives what every component still logs
    STORE: 6,
}
OWN_CAPABILITIES: frozenset[Capability] = frozenset({"restore", "supervisor"})

# What the native target does not run, and why (probes of those parts skip with this reason).
RUNS_WITHOUT = {
    "grafana": (
        "the native target runs no Grafana: Debian 12 does not package it and its releases come "
        "from grafana.com, which this machine cannot reach; point grafana_url of a target file "
        "at the deployment's Grafana to decide this item"
    ),
    "containers": (
        "the native target runs its components as plain processes, not containers: there are "
        "no per-container metrics to collect (decide this item on a containers or external "
        "target whose Prometheus scrapes cAdvisor or the kubelet)"
    ),
}


@dataclass(frozen=True)
class Stack:
    """The parts of one start, chosen before anything runs."""

    dir: Path
    logs: Path
    pki: Pki
    edge_url: str
    http_url: str
    api_ports: tuple[int, ...]
    postgres: Postgres
    standby: Standby | None
    redis: RedisServer
    edge: Edge
    log_port: int  # the central log store's, on loopback


class NativeTarget:
    """`with NativeTarget(opts) as info:` brings the whole stack up and always tears it down."""

    def __init__(self, options: NativeOptions | None = None) -> None:
        self.options = options or NativeOptions()
        self.supervisor = Supervisor(RestartPolicy() if self.options.supervise else None)
        self.dir: Path | None = None
        self.info: TargetInfo | None = None
        self.started_in: float | None = None
        self.deployed_at: float | None = None
        self.admin_key = secrets.token_urlsafe(32)
        self._jwt_secret = secrets.token_urlsafe(48)
        # Direct URLs of the API workers (plain HTTP on loopback), for tests that must reach one
        # worker in particular, e.g. to prove fan-out across workers.
        self.worker_urls: list[str] = []
        # What a restore at start (options.restore_from) reported.
        self.restore_report: dict[str, object] | None = None
        self._postgres: Postgres | None = None
        self._standby: Standby | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TargetInfo:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TargetInfo:
        """Bring the stack up, top to bottom; returns once the edge serves."""
        opts = self.options
        t0 = time.monotonic()
        stack = self._prepare()
        stack.postgres.begin_initdb()  # the slowest step runs while the rest starts
        log_store = self._start_log_store(stack)
        stack.redis.start(self.supervisor.spawn)
        tracker = self._start_error_tracker(stack)
        workers = WorkerSettings(
            dsn=self._workers_dsn(stack),
            redis_url=stack.redis.url,
            admin_key=self.admin_key,
            jwt_secret=self._jwt_secret,
            upload_dir=stack.dir / "uploads",
            origin=stack.edge_url,
            demo=opts.demo,
            extra={
                "CHATSDK_SENTRY_DSN": tracker.dsn,
                "CHATSDK_LOG_SERVER": log_store.address,
                **opts.worker_env,
            },
        )
        # Workers start before the databases are ready on purpose: they connect with backoff.
        # Not so when a backup is restored first: they would migrate the empty database.
        opts.log(f"starting {opts.workers} API worker(s)")
        started = self._start_workers(stack, workers) if opts.restore_from is None else []
        stack.edge.start(self.supervisor.spawn, stack.logs)
        self._start_postgres(stack)
        if stack.standby is not None and opts.restore_from is None:
            stack.standby.begin()  # its base backup runs while the workers get ready
        if opts.restore_from is not None:
            self._restore(stack, opts.restore_from)
            if stack.standby is not None:
                # Copied from the restored primary: a restore can write more WAL than the
                # standby's slot keeps (max_slot_wal_keep_size), which a base backup begun
                # before it would need and find removed.
                stack.standby.begin()
            started = self._start_workers(stack, workers)
        self._wait_serving(stack, started)
        if stack.standby is not None:
            opts.log("starting the PostgreSQL standby")
            stack.standby.finish(self._spawn_as, stack.pki)
            if not opts.test.asynchronous_replication:
                guard, env = sync_guard(stack.postgres, stack.standby)
                self.supervisor.spawn(guard, env=env, run_as=stack.postgres.run_as)
                wait_synchronous(stack.postgres, stack.postgres)
        self.deployed_at = time.time()  # the release is serving: deployed
        tracker.wait_ready(opts.ready_timeout)
        observability = self._start_observability(stack) if opts.observability else None
        repository, job_env = self._start_backups(stack, textfile=observability is not None)
        self.started_in = time.monotonic() - t0
        supervision_log = stack.logs / "supervisor.log"
        supervision_log.touch()  # named among the log files from the start
        self.info = self._info(
            stack, tracker, observability, repository, job_env, log_store=log_store
        )
        self.supervisor.supervise(partial(self._log_supervision, supervision_log))
        return self.info

    def stop(self) -> None:
        """Stop in dependency order (monitoring, edge, API, Redis, PostgreSQL), then remove the
        temp dir."""
        if self._postgres is not None:
            self._postgres.abandon_initdb()
        if self._standby is not None:
            self._standby.abandon()
        self.supervisor.stop_all(STOP_ORDER)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _log_supervision(self, path: Path, message: str) -> None:
        """The supervisor's word on a worker's exit, restart or give-up: in the target's log
        and in logs/supervisor.log (one of the log files the target names)."""
        self.options.log(message)
        with path.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n")

    def restarts(self) -> dict[str, int]:
        """How many times the supervisor restarted each API worker that exited unasked
        (TargetInfo.drills.restarts).

        This count is the supervisor's fact, not the workers': a worker's own /metrics start
        from zero in each new process, and a killed process reports nothing. In production the
        process manager counts too (systemd's NRestarts, Kubernetes' restartCount), so the
        target gives the count beside `processes`, where it already says what its launcher
        knows about the processes it runs; each restart is also a line of logs/supervisor.log,
        with the exit's reason, for a person."""
        counts = self.supervisor.restarts
        return {c.name: counts.get(c.name, 0) for c in self.children if is_worker(c.name)}

    # -- the steps of start ------------------------------------------------------------------

    def _prepare(self) -> Stack:
        """Ports, binaries, the temp dir and the PKI: what can fail fails before anything
        starts."""
        opts = self.options
        if opts.workers < 1:
            raise PreflightError(f"--workers must be at least 1 (got {opts.workers})")
        sweep_stale_dirs()
        https_port = _port(opts.edge_port, "edge HTTPS", "--edge-port")
        http_port = _port(opts.http_port, "edge plain-HTTP", "--http-port")
        pg_port, redis_port, log_port = free_port(), free_port(), free_port()
        api_ports = tuple(free_port() for _ in range(opts.workers))
        pg_programs = binaries(opts.pg_bin)
        executable("nginx")  # fail before anything starts, with the install hint
        redis_program = executable("redis-server")
        self.dir = workdir = make_workdir()
        opts.log("generating the private CA and the edge certificate")
        pki = make_pki(workdir / "pki")
        self.worker_urls = [f"http://127.0.0.1:{p}" for p in api_ports]
        self._postgres = Postgres(workdir, pg_port, pg_programs, opts.test, opts.ready_timeout)
        self._standby = Standby(self._postgres, free_port()) if opts.standby else None
        return Stack(
            dir=workdir,
            logs=workdir / "logs",
            pki=pki,
            edge_url=f"https://127.0.0.1:{https_port}",
            http_url=f"http://127.0.0.1:{http_port}",
            api_ports=api_ports,
            postgres=self._postgres,
            standby=self._standby,
            redis=RedisServer(
                workdir, redis_port, redis_program, opts.test.redis_settings, opts.ready_timeout
            ),
            edge=Edge(
                edge_config(
                    opts,
                    workdir / "edge",
                    (https_port, http_port),
                    api_ports,
                    pki,
                    log_port=log_port,
                ),
                opts.test.edge_template_dir,
            ),
            log_port=log_port,
        )

    def _start_error_tracker(self, stack: Stack) -> ErrorTracker:
        """The stand-in for Sentry's ingestion (errortracker.py): the workers report to it."""
        self.options.log("starting the error-tracking stand-in")
        return start_error_tracker(
            stack.dir / "errortracker",
            spawn=lambda child, env: self.supervisor.spawn(child, env=dict(env)),
        )

    def _start_log_store(self, stack: Stack) -> NativeLogStore:
        """The central log store and the shipper of PostgreSQL's and Redis's log files
        (targets/logstore.py); the workers and the edge ship to the store themselves."""
        self.options.log("starting the central log store")
        return start_native(
            stack.dir,
            stack.log_port,
            spawn=lambda child, env: self.supervisor.spawn(child, env=dict(env)),
            logs=stack.logs,
            shipped={"postgres": stack.logs / "postgres.log", "redis": stack.logs / "redis.log"},
            ready_timeout=self.options.ready_timeout,
        )

    def _start_workers(self, stack: Stack, settings: WorkerSettings) -> list[Child]:
        return [
            start_worker(self.supervisor, settings, i, port, stack.logs)
            for i, port in enumerate(stack.api_ports)
        ]

    def _start_postgres(self, stack: Stack) -> None:
        self.options.log("initialising PostgreSQL")
        stack.postgres.finish_initdb()
        stack.postgres.configure(stack.pki)
        stack.postgres.start(self._spawn_as)
        stack.postgres.create_app_role()

    def _spawn_as(self, child: Child, run_as: RunAs | None) -> Child:
        return self.supervisor.spawn(child, run_as=run_as)

    def _workers_dsn(self, stack: Stack) -> str:
        """The primary, then the standby: after a failover the workers' pools reconnect to
        whichever accepts writes (target_session_attrs=read-write)."""
        servers: tuple[Server, ...] = (stack.postgres,)
        if stack.standby is not None and not self.options.test.workers_primary_only:
            servers += (stack.standby,)
        return stack.postgres.dsn_of(servers, stack.pki.ca_cert)

    def _restore(self, stack: Stack, backup: Path) -> None:
        self.options.log(f"restoring backup {backup.name}")
        self.restore_report = restore_backup(
            backup,
            superuser_dsn=stack.postgres.dsn(stack.pki.ca_cert, superuser=True),
            upload_dir=stack.dir / "uploads",
            pg_bin=self.options.pg_bin,
            log=stack.logs / "restore.log",
        )

    def _wait_serving(self, stack: Stack, workers: list[Child]) -> None:
        """Until every worker is ready and the edge answers ready over TLS."""
        timeout = self.options.ready_timeout
        self.options.log("waiting for the API workers and the edge to be ready")
        for child, port in zip(workers, stack.api_ports, strict=True):
            url = f"http://127.0.0.1:{port}/v1/health/ready"
            wait_until(child, lambda u=url: http_ok(u), timeout, "ready")  # type: ignore[misc]
        ca = ssl.create_default_context(cafile=str(stack.pki.ca_cert))
        assert stack.edge.child is not None
        edge_ready = f"{stack.edge_url}/v1/health/ready"
        wait_until(stack.edge.child, lambda: http_ok(edge_ready, ca), timeout, "ready")

    def _start_observability(self, stack: Stack) -> Observability:
        self.options.log("starting Prometheus, Alertmanager and the exporters")
        return start_observability(
            stack.dir / "observability",
            spawn=lambda child, env: self.supervisor.spawn(child, env=env),
            api_targets=[f"127.0.0.1:{p}" for p in stack.api_ports],
            postgres_dsn=stack.postgres.dsn(stack.pki.ca_cert),
            redis_address=stack.redis.address,
            redis_password=stack.redis.password,
            monitoring_dir=self.options.test.monitoring_dir,
            ready_timeout=self.options.ready_timeout,
        )

    def _start_backups(self, stack: Stack, *, textfile: bool) -> tuple[Path, dict[str, str]]:
        """The backup repository and the backup job's environment; with `backups`, the schedule
        (its first backup is taken before the target counts as started)."""
        repository = stack.dir / "backups"
        repository.mkdir(mode=0o700, exist_ok=True)
        env = backup_env(
            repository=repository,
            superuser_dsn=stack.postgres.dsn(stack.pki.ca_cert, superuser=True),
            redis_url=stack.redis.url,
            upload_dir=stack.dir / "uploads",
            pg_bin=self.options.pg_bin,
            # node_exporter's textfile collector (observability.py) shows the backup gauges.
            textfile_dir=stack.dir / "observability" / "textfile" if textfile else None,
            extra=self.options.test.backup_env,
        )
        if self.options.backups:
            self.options.log("taking the first scheduled backup")
            wait_first_backup(self.supervisor.spawn(scheduler(stack.logs), env=env), repository)
        return repository, env

    def _info(
        self,
        stack: Stack,
        tracker: ErrorTracker,
        observability: Observability | None,
        repository: Path,
        job_env: dict[str, str],
        *,
        log_store: NativeLogStore,
    ) -> TargetInfo:
        opts = self.options
        migration = opts.test.rehearsal_migration
        workers = tuple(f"api-{i}" for i in range(opts.workers))
        releases = WorkerReleases(
            workers,
            lambda name, release: redeploy(self.supervisor, name, release),
            stack.dir / "candidate",
            migration if migration is not None else EXPAND_MIGRATION,
        )
        jobs = {
            "backup": ProcessJob("backup", job_argv(BACKUP_MODULE, "run"), job_env),
            "verify": ProcessJob("verify", job_argv(BACKUP_MODULE, "verify"), job_env),
            "retention": ProcessJob(
                "retention",
                job_argv(RETENTION_MODULE),
                self.supervisor.start_args["api-0"][0] or {},
            ),
        }
        return TargetInfo(
            name="native",
            kind="native",
            edge=base.Edge(
                url=stack.edge_url,
                http_url=stack.http_url,
                ca_file=stack.pki.ca_cert,
                harness_certificate=True,  # minted by make_pki for this run
            ),
            admin_key=self.admin_key,
            jwt_secret=self._jwt_secret,
            stores=base.Stores(
                postgres_dsn=stack.postgres.dsn(stack.pki.ca_cert),
                redis_url=stack.redis.url,
                upload_dir=stack.dir / "uploads",
            ),
            observability=base.Observability(
                metrics_urls=tuple(f"{url}/metrics" for url in self.worker_urls),
                log_files=(
                    *sorted(stack.logs.glob("*.log")),
                    *sorted((stack.dir / "edge").rglob("*.log")),
                ),
                prometheus_url=observability.prometheus_url if observability else None,
                alertmanager_url=observability.alertmanager_url if observability else None,
                error_events=tracker.events,
                log_store=log_store.store,
            ),
            backups=base.Backups(dir=repository, on_database_host=True, restore=self.restore),
            drills=base.Drills(
                control=self.supervisor.controls(),
                jobs=jobs,
                releases=releases,
                alert_routing=observability.routing if observability else None,
                processes=self.processes,
                restarts=self.restarts if opts.supervise else None,
                worker_urls={
                    name: url for name, url in zip(workers, self.worker_urls, strict=False)
                },
                failover=(
                    Failover(
                        stack.postgres,
                        stack.standby,
                        self.supervisor,
                        synchronous=not opts.test.asynchronous_replication,
                    )
                    if stack.standby is not None
                    else None
                ),
            ),
            deployment=base.Deployment(
                deployed_at=self.deployed_at,
                runs_without=RUNS_WITHOUT,
                placement=self.placement,
            ),
        )

    # -- the contract (base.Target) ----------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[Capability]:
        return OWN_CAPABILITIES | offered(self.info)

    def describe(self) -> TargetDescription:
        """Versions (NGINX's too: this machine's) and the digest of every configuration file in
        the temp dir, while the target runs."""
        return describe_running(self.info, self.dir, local_nginx=self.dir is not None)

    def crashed(self) -> list[Child]:
        """Children that exited without being asked to."""
        return self.supervisor.crashed()

    def restore(self, backup: Path, log: Callable[[str], None] | None = None) -> NativeTarget:
        """A new native system with this one's number of workers and PostgreSQL binaries (its
        own ports, temp dir and secrets, everything else as by default), whose database and
        upload store hold `backup` before its API workers start. Enter it to start it; its
        `restore_report` then says what the restore job reported."""
        return NativeTarget(
            NativeOptions(
                workers=self.options.workers,
                pg_bin=self.options.pg_bin,
                restore_from=backup,
                log=log or self.options.log,
            )
        )

    # -- what runs ---------------------------------------------------------------------------

    @property
    def children(self) -> list[Child]:
        return self.supervisor.children

    def pids(self) -> list[int]:
        return [c.pid for c in self.children if c.proc is not None]

    def processes(self) -> dict[str, int]:
        """The main process of each running component of the system (TargetInfo.processes):
        the API workers, PostgreSQL, Redis and NGINX, not the harness's helpers (error tracker,
        monitoring, backup scheduler), which a deployment runs elsewhere."""
        return {
            c.name: c.pid
            for c in self.children
            if c.running() and (c.name in SYSTEM_COMPONENTS or is_worker(c.name))
        }

    def placement(self) -> dict[str, base.Placement]:
        """Each running component of the system (`processes`) as a process of this machine, in
        its cgroup (Deployment.placement)."""
        return {
            name: process_placement(pid, "api" if is_worker(name) else name)
            for name, pid in self.processes().items()
        }


def _port(wanted: int | None, what: str, option: str) -> int:
    if wanted is None:
        return free_port()
    ensure_port_free(wanted, what, option)
    return wanted
