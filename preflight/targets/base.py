"""The contract of a target: what every target exposes to probes, drills and load (where the
system is, how to trust it, how to administer it, control over each component where available),
and what a caller may ask of the target itself (its capabilities, a description of what runs,
the components that crashed, a restore)."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from preflight.errors import TargetUnavailable

# The label of the always-firing watchdog alert a target may add to its Prometheus rules to
# show that alerting works end to end; probes that ask "is anything firing?" leave it out.
WATCHDOG_LABEL = ("preflight", "watchdog")
TargetKind = Literal["native", "containers", "external"]
# What a target can do besides being entered. Most follow from the TargetInfo it gives (see
# `offered`); `supervisor` (it knows which of its components crashed) and `restore` (it can build
# a new system from a backup) are the target's own.
Capability = Literal[
    "control",
    "restore",
    "supervisor",
    "observability",
    "backups",
    "metrics",
    "logs",
    "log_store",
    "releases",
    "alert_routing",
    "jobs",
    "error_tracking",
    "grafana",
    "processes",
    "partitions",
    "cert_renewal",
    "failover",
    "placement",
]
ControlAction = Literal["stop", "start", "kill"]
CONTROL_ACTIONS: tuple[ControlAction, ...] = ("stop", "start", "kill")


class ComponentControl(Protocol):
    """Break and restore one component (a drill's hands). `stop` is the component's graceful
    stop and returns its exit code where the target knows it (native: yes; commands: None)."""

    def stop(self) -> int | None: ...
    def start(self) -> None: ...
    def kill(self) -> None: ...


class ReleaseControl(Protocol):
    """Which release each API worker runs: the hands of the rollout, rollback and rolling
    restart drills. A release is a directory holding its `chatsdk` package (a candidate the drill
    builds), or None for the release the target was started with."""

    @property
    def workers(self) -> tuple[str, ...]:
        """The API workers' component names (as in `control`), in rollout order."""
        ...

    def deploy(self, worker: str, release: Path | None) -> int | None:
        """Stop `worker` gracefully and start it again on `release`; returns the old process's
        exit code where known, once the new one is started (not yet ready)."""
        ...

    def candidate(self) -> Path | None:
        """A release to rehearse a rollout with (None: the target offers none)."""
        ...


class NetworkPartition(Protocol):
    """Cut the API workers off one store over the network, and heal the cut: the partition
    drills' hands. Both ends keep running; only the network between them is gone."""

    @property
    def stores(self) -> tuple[str, ...]:
        """The stores the API can be cut off alone ("postgres", "redis")."""
        ...

    def cut(self, store: str) -> str:
        """Cut every API worker off `store` (the others stay reachable); returns how."""
        ...

    def heal(self, store: str) -> None:
        """Undo `cut`: the API workers reach `store` again as before."""
        ...


class AlertRouting(Protocol):
    """For an alert drill: every receiver of Alertmanager delivers to a webhook of the drill
    (`{webhook_url}/{receiver}`), and the alert rules' `for` durations, range windows and
    offsets, and the routes' wait intervals are shortened; `restore` puts the real
    configuration back. `listen_host`: the address of this machine where the drill's webhook
    listens so that Alertmanager reaches it (127.0.0.1 where Alertmanager runs on this
    machine's loopback)."""

    @property
    def listen_host(self) -> str: ...

    def divert(self, webhook_url: str) -> str:
        """Apply the drill configuration once it is loaded; returns what was changed."""
        ...

    def restore(self) -> None: ...


class DatabaseFailover(Protocol):
    """PostgreSQL's failover, for the failover drill: promote the standby once the primary is
    lost (the drill kills it through `control`), and afterwards put the deployment back as it
    started (the lost primary rebuilt and primary again, the standby streaming from it)."""

    def replication_held(self) -> AbstractContextManager[None]:
        """For the block, the primary sends its standby nothing (its WAL senders stopped) while
        its commits go on, as when the link between them stalls: what the primary acknowledges
        then exists only on the primary, unless a commit waits for the standby (synchronous
        replication). On exit the senders go on, or are killed if the primary died meanwhile."""
        ...

    def promote(self) -> None:
        """Promote the standby (`pg_promote()`); returns once it accepts writes."""
        ...

    def rejoin(self) -> None: ...


@dataclass(frozen=True)
class CpuStat:
    """A worker's CPU controller counters (its cgroup's cpu.stat), cumulative since it started:
    enforcement periods, periods in which it used up its quota and was throttled, and the time
    it spent throttled."""

    periods: int
    throttled: int
    throttled_usec: int


class CpuLimits(Protocol):
    """Each API worker's own CPU limit, set live and put back: the load run's scaling step
    (PERF-HSCALE) limits every worker to the same few CPUs, so doubling the workers doubles the
    CPU they may use whatever the host has, and reads the workers' throttling to show the limit,
    not the host, bounded each run."""

    @property
    def workers(self) -> tuple[str, ...]:
        """Every API worker the edge sends /v1 to, by its name in `control`."""
        ...

    def limit(self, cpus: float) -> str:
        """Limit each worker to `cpus` CPUs now (running or stopped); returns how."""
        ...

    def restore(self) -> None:
        """Put the deployment's own limits back on every worker."""
        ...

    def cpu_stat(self) -> Mapping[str, CpuStat]:
        """Each running worker's counters now (stopped workers are left out)."""
        ...


@dataclass(frozen=True)
class ShellControl:
    """Control by commands from a target file (an external deployment)."""

    component: str
    commands: Mapping[ControlAction, str]
    timeout: float = 120.0

    def _run(self, action: ControlAction) -> None:
        command = self.commands.get(action)
        if command is None:
            raise TargetUnavailable(
                f"{self.component}: the target file gives no `{action}` command under "
                f"control.{self.component}; add one to let drills {action} it"
            )
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if result.returncode != 0:
            raise TargetUnavailable(
                f"{self.component}: `{command}` exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")

    def kill(self) -> None:
        self._run("kill")


@dataclass(frozen=True)
class JobResult:
    """How one run of a job of the system ended."""

    job: str
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


class Job(Protocol):
    """A job of the system run on request (a backup now, the retention job now)."""

    def run(self, *args: str, timeout: float = 600.0) -> JobResult: ...


def _job_result(
    job: str, argv: list[str], env: Mapping[str, str] | None, timeout: float
) -> JobResult:
    t0 = time.monotonic()
    try:
        result = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise TargetUnavailable(
            f"job {job}: `{argv[0]}` did not end within {timeout:.0f} s"
        ) from exc
    except OSError as exc:
        raise TargetUnavailable(f"job {job}: `{argv[0]}` cannot be run: {exc}") from exc
    return JobResult(job, result.returncode, result.stdout, result.stderr, time.monotonic() - t0)


@dataclass(frozen=True)
class ShellJob:
    """A job run by a command from a target file (arguments are appended)."""

    name: str
    command: str

    def run(self, *args: str, timeout: float = 600.0) -> JobResult:
        return _job_result(self.name, [*shlex.split(self.command), *args], None, timeout)


@dataclass(frozen=True)
class ProcessJob:
    """A job run as a process of this machine with its own environment (the native target)."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def run(self, *args: str, timeout: float = 600.0) -> JobResult:
        return _job_result(self.name, [*self.argv, *args], self.env, timeout)


class CertificateRenewal(Protocol):
    """The deployment's own certificate renewal, run on request: the renewal drill's hands."""

    @property
    def schedule(self) -> str:
        """How the deployment renews on its own, for a person ("certbot renew every 43200 s")."""
        ...

    def renew(self) -> str:
        """Renew the edge's certificate now, due or not, as the deployment's ACME client does
        when it is due; returns once the client is done (its last output line). The edge serves
        the new certificate when the deployment's own wiring makes it (a reload)."""
        ...


@dataclass(frozen=True)
class ShellRenewal:
    """The certificate renewal of a deployment preflight did not start, run by a command from a
    target file (base.CertificateRenewal)."""

    command: str
    schedule: str
    timeout: float = 300.0

    def renew(self) -> str:
        result = _job_result("certificate renewal", shlex.split(self.command), None, self.timeout)
        output = (result.stdout or result.stderr).strip()
        if result.returncode != 0:
            raise TargetUnavailable(
                f"certificate renewal: `{self.command}` exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        return output.splitlines()[-1] if output else ""


@dataclass(frozen=True)
class ClientNetwork:
    """Where this machine can be many clients of the edge: the edge's HTTPS `address` (host,
    port) on a network where this machine may send from any address of `sources` (a CIDR), each
    seen by the edge as a client of its own. Probes that need several clients (a guesser, the
    credential's holder elsewhere, a botnet) bind each to an address of `sources`; TLS is still
    verified for the edge's own name. An edge on this machine's loopback has one without asking
    (127.0.0.0/8); the containers target gives one on a network of the run's own, since the
    engine's published ports show every client of this machine as one address."""

    address: tuple[str, int]
    sources: str


@dataclass(frozen=True)
class Edge:
    """Where the system answers and how to trust it: the edge's HTTPS address, its plain-HTTP
    address where it has one (for the redirect probes), the CA that signed its certificate
    (None: the system CAs), where this machine can be many clients of it (`clients`), and its
    running configuration (`config`).

    `harness_certificate`: the certificate was minted by the harness for this run (its own
    per-run CA), not obtained by the deployment: the certificate items judge nothing about the
    deployment then and skip. `run_ca`: the deployment obtained its certificate, but from a CA
    the run started (the containers target's pebble), so `ca_file` is that CA's root: a chain
    to it shows what the deployment's ACME client got, not that clients trust it (INF-NET-CERT
    skips once that chain verified). `renewal`: the deployment's renewal on request, where the
    target can run it (capability `cert_renewal`)."""

    url: str
    http_url: str | None = None
    ca_file: Path | None = None
    clients: ClientNetwork | None = None
    # The running edge's configuration as `nginx -T` prints it, where the target can ask the
    # edge itself (None: probes read it from an NGINX master on this host, if there is one).
    config: Callable[[], str] | None = field(default=None, repr=False)
    harness_certificate: bool = False
    run_ca: bool = False
    renewal: CertificateRenewal | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Stores:
    """The system's stores as reachable from here. Optional; the probes that read them skip
    without them: PostgreSQL's DSN, Redis's URL and the upload store (local storage, for the
    GDPR and restore drills)."""

    postgres_dsn: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    upload_dir: Path | None = None
    # Where the API workers reach the stores, where that differs from the DSN and URL above
    # ("postgres" -> "postgres:5432" on a container network the stores' published ports lead
    # to): the probes that compare a worker's own report with the target's stores accept both.
    network_addresses: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredEvent:
    """One event as the central log store keeps it: the component that sent it (`app`, its
    syslog APP-NAME: "chatsdk", "nginx", "postgres", "redis"), the sender's address (`source`),
    the input it arrived on (`input`: "imtcp", "imudp", ...: over the network), when the store
    received it (`received`, epoch seconds) and the component's own line (`message`)."""

    app: str
    source: str
    input: str
    received: float
    message: str


class LogStore(Protocol):
    """The central log store every component ships its logs to, searchable from here."""

    @property
    def address(self) -> str:
        """Where the components ship to, as they reach it ("logstore:5514"), for a person."""
        ...

    def search(self, text: str) -> Sequence[StoredEvent]:
        """Every stored event whose message contains `text`, oldest first."""
        ...


@dataclass(frozen=True)
class Observability:
    """What watches the system. Optional; the probes that read a part skip without it.

    `metrics_urls`: the API workers' internal /metrics URLs (never the edge). `log_files`: log
    files of the system (JSON lines of the API, the edge's access log, ...). `prometheus_url`,
    `alertmanager_url`: their HTTP APIs, for the live monitoring probes. `grafana_url`: Grafana's
    HTTP API (basic-auth credentials, if any, in the URL), for MON-GRAFANA. `error_events`: the
    events the error tracker received (JSON lines, one Sentry event each), for
    MON-ERROR-TRACKING: the native and containers targets' stand-in writes it
    (targets/errortracker.py). `log_store`: the central log store the components ship their
    logs to over the network (MON-LOG-CENTRAL).
    `network_addresses`: where Prometheus reaches what the URLs above name, where its network
    differs from this machine's (the containers target): a metrics URL, or "alertmanager" ->
    host:port as Prometheus scrapes or alerts it; "node" -> the node exporter's, where one node
    exporter watches the one host every component runs on."""

    metrics_urls: tuple[str, ...] = ()
    log_files: tuple[Path, ...] = ()
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    grafana_url: str | None = field(default=None, repr=False)
    error_events: Path | None = None
    network_addresses: Mapping[str, str] = field(default_factory=dict)
    log_store: LogStore | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Backups:
    """The backup repository of chatsdk.backup readable from here (catalogue.json, one directory
    per backup), and its copy outside the database's host and failure domain where the
    deployment keeps one (checks/drills/test_backup.py). Optional; those probes skip without."""

    dir: Path | None = None
    offsite_dir: Path | None = None
    # The repository is on the database's own host (a target that runs everything on one
    # machine says so): without an off-site copy, no backup is in another failure domain.
    on_database_host: bool = False
    # A new system built like this one whose data is one backup of the repository (Target
    # .restore), for the restore drill; None: the drill restores into a native system here.
    restore: Callable[[Path, Callable[[str], None] | None], RestoredTarget] | None = field(
        default=None, repr=False
    )


@dataclass(frozen=True)
class Drills:
    """The hands of the drills and of the load run. Optional; what needs a missing part skips.

    `control`: stop, start and kill each component. `jobs`: jobs of the system run on request,
    "backup" (`python -m chatsdk.backup run`), "verify" (`python -m chatsdk.backup verify`:
    pg_verifybackup of a backup by the tools that took it) and "retention"
    (`python -m chatsdk.retention`).
    `releases`, `alert_routing`: the rollout drills' deploy tool and the alert drill's routing.
    `worker_urls`: an API worker's own plain-HTTP address by its control name, where the target
    ties the two (drills then watch the worker itself, not only the edge).
    `processes`: the process of each component, for the load run's resource figures
    (PERF-CPU-HEADROOM, PERF-MEM-HEADROOM, PERF-SATURATION): component name ("api-0",
    "postgres", "redis", "nginx") -> the pid of its main process (its children count too), asked
    again at each sample because drills restart components. Only a target on this machine has
    it (native).
    `partitions`: cut the API workers off PostgreSQL or Redis over the network and heal the
    cut (the partition drills); only a target that owns the network between them has it
    (containers).
    `restarts`: how many times the deployment's supervisor restarted each component after it
    exited unasked (component name -> count), as the supervisor counts it (systemd's NRestarts,
    Kubernetes' restartCount); absent where nothing supervises the components.
    `listeners`: where this host accepts connections for the target's components, as
    (component, address, port) (the containers target: the engine's published ports), for
    SEC-PORTS-CLOSED; None: the probe reads the listening sockets of the edge's processes on
    this host, if they are here.
    `callback_host`: an address of this machine that the system's workers can reach, where a
    probe listens for what the system sends out (webhooks); None: the target does not say (an
    edge on loopback implies 127.0.0.1, see ProbeTarget.callback_host).
    `failover`: promote PostgreSQL's standby and rejoin the pair afterwards (the failover
    drill); absent where the target runs no standby or cannot promote it.
    `cpu_limits`: each API worker's own CPU limit, set live for the load run's scaling step,
    and its throttling; absent where the workers share the host's cores (native) or the target
    cannot change their limits (external): the step then measures the host's cores."""

    control: Mapping[str, ComponentControl] = field(default_factory=dict, repr=False)
    jobs: Mapping[str, Job] = field(default_factory=dict, repr=False)
    releases: ReleaseControl | None = field(default=None, repr=False)
    alert_routing: AlertRouting | None = field(default=None, repr=False)
    processes: Callable[[], Mapping[str, int]] | None = field(default=None, repr=False)
    restarts: Callable[[], Mapping[str, int]] | None = field(default=None, repr=False)
    partitions: NetworkPartition | None = field(default=None, repr=False)
    worker_urls: Mapping[str, str] = field(default_factory=dict)
    listeners: Callable[[], Sequence[tuple[str, str, int]]] | None = field(default=None, repr=False)
    callback_host: str | None = None
    failover: DatabaseFailover | None = field(default=None, repr=False)
    cpu_limits: CpuLimits | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Placement:
    """Where one running component is and what bounds it there. `service`: what it is ("api"
    for a replica the edge sends /v1 to; "postgres", "redis", "nginx", ...). `node`: the host it
    runs on as its platform names it (this machine's host name, a Docker engine's name and id, a
    Kubernetes node). `scope`: what its limits are set on (a container, a cgroup); components
    sharing a scope share its limits. `cpus`, `memory_bytes`: the CPU and memory limits enforced
    on that scope (None: none). `how`: where this was read, for a person."""

    service: str
    node: str
    scope: str
    cpus: float | None = None
    memory_bytes: int | None = None
    how: str = ""


@dataclass(frozen=True)
class Deployment:
    """Facts about the deployment itself. `peak_requests_per_s`: the production peak the
    capacity item is measured against (POST-CAPACITY), requests/s at the busiest minute of real
    traffic, from the target file (unverified without it). `deployed_at`: when the running
    release was deployed (epoch seconds), for the probes that ask "since the deploy"
    (POST-BACKUP-RAN); None: they take the oldest API worker's start, which a drill or a load
    run's scaling step that restarts every worker moves. `runs_without`: parts the deployment
    does not run, with why, for a person ("grafana", "containers"): probes of such a part skip
    with that reason instead of asking for a field of a target file. `placement`: each running
    component (by its name in `control`) -> where it runs and its limits, read now (INF-HA-NODES,
    PERF-RESOURCE-LIMITS); None where the target does not know."""

    peak_requests_per_s: float | None = None
    deployed_at: float | None = None
    runs_without: Mapping[str, str] = field(default_factory=dict)
    placement: Callable[[], Mapping[str, Placement]] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TargetInfo:
    """The addresses and credentials of a running system under test, by part.

    `admin_key` administers the API; `jwt_secret` is the API's JWT signing secret, where the
    deployment shares it with its verifier: probes sign tokens that are genuine but for the
    claims (expired, not yet valid, wrong audience or issuer) to show those claims are checked
    (optional; those cases skip without it)."""

    name: str
    kind: TargetKind
    edge: Edge
    admin_key: str = field(repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    stores: Stores = field(default_factory=Stores)
    observability: Observability = field(default_factory=Observability)
    backups: Backups = field(default_factory=Backups)
    drills: Drills = field(default_factory=Drills)
    deployment: Deployment = field(default_factory=Deployment)


def offered(info: TargetInfo | None) -> frozenset[Capability]:
    """The capabilities a running target's info gives (none before it runs)."""
    if info is None:
        return frozenset()
    seen, drills = info.observability, info.drills
    given: dict[Capability, object] = {
        "control": drills.control,
        "observability": seen.prometheus_url or seen.alertmanager_url,
        "backups": info.backups.dir,
        "metrics": seen.metrics_urls,
        "logs": seen.log_files,
        "log_store": seen.log_store,
        "releases": drills.releases,
        "alert_routing": drills.alert_routing,
        "jobs": drills.jobs,
        "error_tracking": seen.error_events,
        "grafana": seen.grafana_url,
        "processes": drills.processes,
        "partitions": drills.partitions,
        "cert_renewal": info.edge.renewal,
        "failover": drills.failover,
        "placement": info.deployment.placement,
    }
    return frozenset(name for name, value in given.items() if value)


@dataclass(frozen=True)
class TargetDescription:
    """What runs: the server versions as the servers report them, and the digest of each
    configuration file the target wrote (relative path -> sha256; an external target's files are
    not ours to read)."""

    name: str
    kind: TargetKind
    edge_url: str
    versions: Mapping[str, str]
    config_digests: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edge_url": self.edge_url,
            "versions": dict(self.versions),
            "config_digests": dict(self.config_digests),
        }


class Crash(Protocol):
    """A component that exited without being asked to."""

    @property
    def name(self) -> str:
        """The component ("api-0", "postgres", ...)."""
        ...

    def crashed_message(self) -> str:
        """How it ended and the last lines of its log, for a person."""
        ...


class Target(Protocol):
    """A system under test that can be entered and left (`with target as info:`), and says what
    it can do (`capabilities`, complete once entered)."""

    def __enter__(self) -> TargetInfo: ...
    def __exit__(self, *exc: object) -> None: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def describe(self) -> TargetDescription:
        """What runs (entered targets only: raises TargetUnavailable before)."""
        ...

    def crashed(self) -> Sequence[Crash]:
        """Components that exited unexpectedly (always none without `supervisor`)."""
        ...

    def restore(self, backup: Path, log: Callable[[str], None] | None = None) -> RestoredTarget:
        """A new system built like this one whose data is `backup` (one backup directory of a
        chatsdk.backup repository), to be entered; raises TargetUnavailable without `restore`."""
        ...


class RestoredTarget(Target, Protocol):
    """A system restored from a backup: what the restore job reported once it ran (None before
    entering, and when the restore could not run at all)."""

    @property
    def restore_report(self) -> Mapping[str, object] | None: ...


class Unsupervised:
    """The part of the contract for a target whose processes this one does not run (containers,
    an external deployment): no crash to report, no restore to offer."""

    kind: TargetKind
    info: TargetInfo | None

    @property
    def capabilities(self) -> frozenset[Capability]:
        return offered(self.info)

    def crashed(self) -> Sequence[Crash]:
        return []

    def restore(self, backup: Path, log: Callable[[str], None] | None = None) -> RestoredTarget:
        raise TargetUnavailable(
            f"the {self.kind} target cannot restore backup {backup.name}: `restore` is not among "
            "its capabilities"
        )
