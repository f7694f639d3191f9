"""How close the system's components come to their limits during a load run: CPU and memory of
each component's process tree against the limits the deployment declares, PostgreSQL
connections against max_connections, and Redis memory and clients against its own limits
(PERF-CPU-HEADROOM, PERF-MEM-HEADROOM, PERF-SATURATION).

The sampler reads what is there at each sample and never raises: a part it could not read is
missing from that sample, with the reason in `errors`. The figures are then computed only from
what was read; a figure that would need a part nobody read is left out, so its item stays
unverified instead of passing on a guess.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psutil
import redis
import yaml

from preflight.errors import PreflightError
from preflight.targets.base import TargetInfo

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "system" / "deploy" / "docker-compose.yml"
SPAN_S = 10.0  # CPU use is a rate over spans of at least this long (or the whole window)
PG_CONNECT_TIMEOUT_S = 1.0
PG_QUERY_TIMEOUT_S = 0.5
REDIS_TIMEOUT_S = 0.5
RETRY_AFTER_S = 5.0  # a database that did not answer is asked again after this long

# Connections that take one of max_connections: client backends, not the server's own processes
# (checkpointer, WAL writer, launchers: no database) and not this sampler's own connection. A
# role without pg_read_all_stats (the app's) sees other roles' backend_type as NULL; those rows
# count when they are in a database, which also counts the odd autovacuum worker: an
# overestimate by at most autovacuum_max_workers, on the safe side for a "below" item.
PG_CONNECTIONS_SQL = """
SELECT count(*) FILTER (
           WHERE pid <> pg_backend_pid()
             AND (backend_type = 'client backend'
                  OR (backend_type IS NULL AND datid IS NOT NULL))
       ) AS used,
       current_setting('max_connections')::int AS max
FROM pg_stat_activity
"""

LIMITS_BASIS = (
    "CPU and memory are those of each component's process tree on this machine, measured against "
    "the limits the deployment declares for its service (deploy.resources.limits of "
    "system/deploy/docker-compose.yml, what the container runtime would enforce); the native "
    "target runs its components as plain processes without cgroup limits"
)
MEMORY_BASIS = (
    "memory is the proportional set size (PSS) summed over the process tree: a page shared by n "
    "processes counts 1/n in each, so PostgreSQL's shared buffers count once, not once per "
    "backend, as a cgroup would charge them; where PSS is unreadable, the main process's RSS plus "
    "each child's RSS minus its shared pages (the sample's errors say so)"
)

# Docker's byte units (binary multiples), as compose accepts them: 512m, 2G, 1536mb, 1073741824.
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class Limits:
    """What the deployment lets one replica of a service use."""

    cpus: float
    memory_bytes: int


def service_of(component: str) -> str:
    """The compose service a component of a target is a replica of ("api-1" -> "api")."""
    return "api" if component.startswith("api-") else component


def _memory_bytes(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    match = _BYTES.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    amount = int(float(match.group(1)) * _UNIT[match.group(2).lower()])
    return amount if amount > 0 else None


def _cpus(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        cpus = float(value)
    except ValueError:
        return None
    return cpus if math.isfinite(cpus) and cpus > 0 else None


def declared_limits(compose_file: Path = COMPOSE_FILE) -> dict[str, Limits]:
    """The per-replica limits (`deploy.resources.limits`) of every service that declares them;
    a service without limits is left out (nothing says what it may use)."""
    try:
        document = yaml.safe_load(compose_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PreflightError(
            f"cannot read the deployment's limits from {compose_file}: {exc}"
        ) from exc
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        raise PreflightError(f"{compose_file} has no `services` mapping to read limits from")
    limits: dict[str, Limits] = {}
    for name, service in services.items():
        deploy = service.get("deploy") if isinstance(service, dict) else None
        resources = deploy.get("resources") if isinstance(deploy, dict) else None
        declared = resources.get("limits") if isinstance(resources, dict) else None
        if declared is None:
            continue
        where = f"{compose_file}: services.{name}.deploy.resources.limits"
        if not isinstance(declared, dict):
            raise PreflightError(f"{where} must be a mapping with cpus and memory")
        cpus, memory = _cpus(declared.get("cpus")), _memory_bytes(declared.get("memory"))
        if cpus is None:
            raise PreflightError(
                f'{where}.cpus must be a positive number of CPUs such as "2.0" '
                f"(got {declared.get('cpus')!r})"
            )
        if memory is None:
            raise PreflightError(
                f"{where}.memory must be a positive size such as 2G or 512M "
                f"(got {declared.get('memory')!r})"
            )
        limits[str(name)] = Limits(cpus, memory)
    return limits


@dataclass(frozen=True)
class ResourceSample:
    """What one look at the system found. `pids` are the components' main processes at that
    moment: a changed pid means the component restarted (its CPU count started over)."""

    t: float  # time.time(), the clock of the load run's time series
    cpu_seconds: Mapping[str, float]  # cumulative user+system CPU of the process tree
    rss_bytes: Mapping[str, int]  # memory of the process tree (MEMORY_BASIS)
    pg_connections: int | None = None  # client backends, the sampler's own left out
    pg_max_connections: int | None = None
    redis_used_memory: int | None = None
    redis_maxmemory: int | None = None  # 0 = unlimited (then no ratio)
    redis_clients: int | None = None  # the sampler's own connection left out
    redis_maxclients: int | None = None
    errors: tuple[str, ...] = ()
    pids: Mapping[str, int] = field(default_factory=dict)
    # The cores of the one machine every component runs on, where they share one (the native
    # target: its processes are this machine's); None when they do not or it is not known.
    host_cores: int | None = None


def _ppid_map() -> dict[int, list[int]]:
    """One pass over the process table (instead of one per component)."""
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if isinstance(ppid, int):
            children.setdefault(ppid, []).append(proc.pid)
    return children


def _tree(root: int, children: Mapping[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _tree_usage(root: int, children: Mapping[int, list[int]]) -> tuple[float, int, bool]:
    """CPU seconds, memory bytes, and whether PSS was read for every process of the tree.

    CPU: each live process's own user+system time plus that of the children it has reaped
    (children_user/children_system). A PostgreSQL backend that ends takes its time into the
    postmaster's reaped-children count, so the tree's total keeps growing as connections come
    and go instead of dropping (and no time is counted twice: a process's time is in its own
    count while it lives and in its reaper's only after it ended)."""
    cpu = 0.0
    pss = 0
    pss_ok = True
    rss_fallback = 0
    for pid in _tree(root, children):
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                memory = proc.memory_info()
                try:
                    pss += proc.memory_full_info().pss
                except (psutil.AccessDenied, AttributeError):
                    pss_ok = False
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            if pid == root:
                raise
            continue  # a child that ended meanwhile: its time is now in its parent's count
        cpu += times.user + times.system + times.children_user + times.children_system
        shared = getattr(memory, "shared", 0)
        rss_fallback += memory.rss if pid == root else max(0, memory.rss - shared)
    return cpu, (pss if pss_ok else rss_fallback), pss_ok


class ResourceSampler:
    """Samples a target's components and its databases' limits; one per load run."""

    def __init__(self, info: TargetInfo) -> None:
        self._info = info
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pg: Any = None  # asyncpg.Connection, kept open between samples
        self._pg_retry_at = 0.0
        self._redis: redis.Redis | None = None
        self._redis_retry_at = 0.0

    def sample(self) -> ResourceSample:
        errors: list[str] = []
        t = time.time()
        pids, cpu, memory = self._processes(errors)
        pg = self._postgres(errors)
        rd = self._redis_figures(errors)
        return ResourceSample(
            t=t,
            cpu_seconds=cpu,
            rss_bytes=memory,
            pg_connections=pg[0],
            pg_max_connections=pg[1],
            redis_used_memory=rd[0],
            redis_maxmemory=rd[1],
            redis_clients=rd[2],
            redis_maxclients=rd[3],
            errors=tuple(errors),
            pids=pids,
            host_cores=(psutil.cpu_count() or None)
            if self._info.drills.processes is not None
            else None,
        )

    def close(self) -> None:
        if self._loop is not None:
            if self._pg is not None:
                try:
                    self._loop.run_until_complete(self._pg.close(timeout=PG_QUERY_TIMEOUT_S))
                except Exception:  # closing for good: an unanswered goodbye is no matter
                    self._pg.terminate()
            # Run what an aborted connection left scheduled (closing its socket) before closing.
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()
            self._loop = None
        self._pg = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    # -- processes -----------------------------------------------------------------------------

    def _processes(
        self, errors: list[str]
    ) -> tuple[dict[str, int], dict[str, float], dict[str, int]]:
        if self._info.drills.processes is None:
            return {}, {}, {}
        try:
            pids = dict(self._info.drills.processes())
            children = _ppid_map()
        except Exception as exc:  # a sample never raises: the reason is kept instead
            errors.append(f"processes: the target's process list failed: {exc!r}")
            return {}, {}, {}
        cpu: dict[str, float] = {}
        memory: dict[str, int] = {}
        for component, pid in sorted(pids.items()):
            try:
                cpu[component], memory[component], pss_ok = _tree_usage(pid, children)
            except psutil.Error as exc:
                errors.append(f"{component}: process {pid} unreadable: {exc!r}")
                continue
            if not pss_ok:
                errors.append(
                    f"{component}: PSS unreadable, RSS minus shared pages used for its memory"
                )
        return pids, cpu, memory

    # -- PostgreSQL ----------------------------------------------------------------------------

    def _postgres(self, errors: list[str]) -> tuple[int | None, int | None]:
        dsn = self._info.stores.postgres_dsn
        if dsn is None:
            return None, None
        now = time.monotonic()
        if self._pg is None and now < self._pg_retry_at:
            errors.append("postgres: not asked (it did not answer a moment ago)")
            return None, None
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            if self._pg is None:
                self._pg = self._loop.run_until_complete(
                    asyncpg.connect(dsn, timeout=PG_CONNECT_TIMEOUT_S)
                )
            row = self._loop.run_until_complete(
                self._pg.fetchrow(PG_CONNECTIONS_SQL, timeout=PG_QUERY_TIMEOUT_S)
            )
        except Exception as exc:  # a sample never raises: the reason is kept instead
            errors.append(f"postgres: connections unreadable: {exc!r}")
            if self._pg is not None:
                self._pg.terminate()
                self._pg = None
            self._pg_retry_at = now + RETRY_AFTER_S
            return None, None
        return int(row["used"]), int(row["max"])

    # -- Redis ---------------------------------------------------------------------------------

    def _redis_figures(
        self, errors: list[str]
    ) -> tuple[int | None, int | None, int | None, int | None]:
        url = self._info.stores.redis_url
        if url is None:
            return None, None, None, None
        now = time.monotonic()
        if self._redis is None and now < self._redis_retry_at:
            errors.append("redis: not asked (it did not answer a moment ago)")
            return None, None, None, None
        try:
            if self._redis is None:
                tls: dict[str, Any] = {}
                if urlsplit(url).scheme == "rediss" and self._info.edge.ca_file is not None:
                    tls["ssl_ca_certs"] = str(self._info.edge.ca_file)
                self._redis = redis.Redis.from_url(
                    url,
                    socket_timeout=REDIS_TIMEOUT_S,
                    socket_connect_timeout=REDIS_TIMEOUT_S,
                    single_connection_client=True,
                    **tls,
                )
            memory = self._redis.info("memory")
            clients = self._redis.info("clients")
            used, maxmemory = int(memory["used_memory"]), int(memory["maxmemory"])
            # This sampler's own connection is one of connected_clients.
            connected = max(0, int(clients["connected_clients"]) - 1)
            maxclients = clients.get("maxclients")
            if maxclients is None:  # Redis < 7 reports it in CONFIG only
                maxclients = self._redis.config_get("maxclients").get("maxclients")
        except (redis.RedisError, KeyError, ValueError, TypeError, OSError) as exc:
            errors.append(f"redis: memory and clients unreadable: {exc!r}")
            if self._redis is not None:
                self._redis.close()
                self._redis = None
            self._redis_retry_at = now + RETRY_AFTER_S
            return None, None, None, None
        return used, maxmemory, connected, int(maxclients) if maxclients is not None else None


# -- figures ---------------------------------------------------------------------------------


def _in_window(samples: Sequence[ResourceSample], start: float, end: float) -> list[ResourceSample]:
    return sorted((s for s in samples if start <= s.t <= end), key=lambda s: s.t)


def _components(window: Sequence[ResourceSample]) -> list[str]:
    return sorted({c for s in window for c in (*s.pids, *s.cpu_seconds, *s.rss_bytes)})


@dataclass(frozen=True)
class _Component:
    """One component's peaks over the window (None: not measured, `why` says why)."""

    service: str
    limits: Limits | None
    cpu_pct: float | None
    cores: float | None
    memory_pct: float | None
    memory_bytes: int | None
    restarts: int
    why: str = ""


def _span_s(window: Sequence[ResourceSample], span_s: float) -> float:
    return min(span_s, window[-1].t - window[0].t) if window else 0.0


def _peak_cores(window: Sequence[ResourceSample], component: str, span_s: float) -> float | None:
    """The highest CPU rate (cores) over spans of at least `span_s` in which the component kept
    one process and was read at every sample."""
    best: float | None = None
    for i, first in enumerate(window):
        j = next((j for j in range(i + 1, len(window)) if window[j].t - first.t >= span_s), None)
        if j is None:
            break
        span = window[i : j + 1]
        pid = first.pids.get(component)
        if any(component not in s.cpu_seconds or s.pids.get(component) != pid for s in span):
            continue  # restarted, stopped or unreadable in the span: its count is not one count
        used = window[j].cpu_seconds[component] - first.cpu_seconds[component]
        elapsed = window[j].t - first.t
        if elapsed <= 0 or used < 0:
            continue
        best = max(best or 0.0, used / elapsed)
    return best


def _component(
    window: Sequence[ResourceSample], component: str, limits: Mapping[str, Limits], span_s: float
) -> _Component:
    service = service_of(component)
    limit = limits.get(service)
    pids = [s.pids[component] for s in window if component in s.pids]
    restarts = sum(a != b for a, b in itertools.pairwise(pids))
    cores = _peak_cores(window, component, span_s) if span_s > 0 else None
    memory = max((s.rss_bytes[component] for s in window if component in s.rss_bytes), default=None)
    why = []
    if limit is None:
        why.append(f"its service {service} declares no limits")
    if cores is None:
        why.append(
            "no span of the window in which it kept one process and was read at every sample"
        )
    if memory is None:
        why.append("its memory was never read in the window")
    return _Component(
        service=service,
        limits=limit,
        cpu_pct=100.0 * cores / limit.cpus if limit and cores is not None else None,
        cores=cores,
        memory_pct=100.0 * memory / limit.memory_bytes if limit and memory is not None else None,
        memory_bytes=memory,
        restarts=restarts,
        why="; ".join(why),
    )


def _ratio_peak(pairs: Sequence[tuple[int | None, int | None]]) -> tuple[float, int, int] | None:
    """The highest used/limit (percent, used, limit) of the pairs where both are known and the
    limit is a limit (> 0)."""
    known = [(u, m) for u, m in pairs if u is not None and m is not None and m > 0]
    if not known:
        return None
    used, limit = max(known, key=lambda p: p[0] / p[1])
    return 100.0 * used / limit, used, limit


@dataclass(frozen=True)
class _Analysis:
    window: list[ResourceSample]
    span_s: float
    components: dict[str, _Component]
    cpu_pct: float | None
    memory_pct: float | None
    parts: dict[str, float]
    missing: dict[str, str]


def _analyse(
    samples: Sequence[ResourceSample], start: float, end: float, limits: Mapping[str, Limits]
) -> _Analysis:
    window = _in_window(samples, start, end)
    span_s = _span_s(window, SPAN_S)
    components = {c: _component(window, c, limits, span_s) for c in _components(window)}
    # "Every component": one component unmeasured leaves the figure out, not the component.
    cpu = [c.cpu_pct for c in components.values()]
    memory = [c.memory_pct for c in components.values()]
    cpu_pct = max(v for v in cpu if v is not None) if cpu and None not in cpu else None
    memory_pct = max(v for v in memory if v is not None) if memory and None not in memory else None
    pg = _ratio_peak([(s.pg_connections, s.pg_max_connections) for s in window])
    redis_memory = _ratio_peak([(s.redis_used_memory, s.redis_maxmemory) for s in window])
    redis_clients = _ratio_peak([(s.redis_clients, s.redis_maxclients) for s in window])
    measured = {
        "cpu": cpu_pct,
        "memory": memory_pct,
        "postgres_connections": pg[0] if pg else None,
        "redis_memory": redis_memory[0] if redis_memory else None,
        "redis_clients": redis_clients[0] if redis_clients else None,
    }
    # Components that share one machine share its cores too: the declared per-service limits
    # add up to more than the machine has, so the host's CPU is a resource of its own. Their
    # peaks added up: an upper bound of their peak together (errs towards failing).
    hosts = {s.host_cores for s in window}
    cores = [c.cores for c in components.values()]
    if len(hosts) == 1 and None not in hosts and cores and None not in cores:
        host_cores = next(iter(hosts))
        assert host_cores is not None
        measured["host_cpu"] = 100.0 * sum(c for c in cores if c is not None) / host_cores
    parts = {name: value for name, value in measured.items() if value is not None}
    unmeasured = {n: c.why for n, c in components.items() if c.why}
    no_processes = "no component's processes were read (the target gives no process access)"
    missing: dict[str, str] = {}
    for part in ("cpu", "memory"):
        if part not in parts:
            missing[part] = (
                "; ".join(f"{n}: {why}" for n, why in unmeasured.items()) or no_processes
            )
    if "postgres_connections" not in parts:
        missing["postgres_connections"] = "PostgreSQL's connections were not read in the window"
    if "redis_memory" not in parts and "redis_clients" not in parts:
        missing["redis"] = "Redis's memory and clients were not read in the window"
    return _Analysis(window, span_s, components, cpu_pct, memory_pct, parts, missing)


def resource_figures(
    samples: Sequence[ResourceSample], start: float, end: float, limits: Mapping[str, Limits]
) -> dict[str, tuple[float, str]]:
    """The load items' figures over the samples in [start, end] (the full-scale window).

    cpu_used_pct_max: the highest CPU rate of any component over a span of >= 10 s (the whole
    window when shorter) as a percent of its service's cpus limit; memory_used_pct_max: the
    highest memory of any component as a percent of its limit. Each is left out unless every
    component seen in the window was measured against a declared limit.
    max_resource_saturation_pct: the highest of those two, PostgreSQL connections over
    max_connections, Redis memory over maxmemory (when set), Redis clients over maxclients,
    and where the components share one machine, their CPU together over its cores;
    left out unless CPU, memory, PostgreSQL connections and Redis were all measured, since a
    pass must cover every resource the item names (resource_details gives the parts that were).
    """
    analysis = _analyse(samples, start, end, limits)
    figures: dict[str, tuple[float, str]] = {}
    if analysis.cpu_pct is not None:
        figures["cpu_used_pct_max"] = (round(analysis.cpu_pct, 2), "%")
    if analysis.memory_pct is not None:
        figures["memory_used_pct_max"] = (round(analysis.memory_pct, 2), "%")
    if not analysis.missing:
        figures["max_resource_saturation_pct"] = (round(max(analysis.parts.values()), 2), "%")
    return figures


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def resource_details(
    samples: Sequence[ResourceSample], start: float, end: float, limits: Mapping[str, Limits]
) -> dict[str, Any]:
    """The record's view of the figures: what each component used at its peak, against which
    limit, what the databases reported, and what could not be read."""
    analysis = _analyse(samples, start, end, limits)
    window = analysis.window
    pg = _ratio_peak([(s.pg_connections, s.pg_max_connections) for s in window])
    redis_memory = _ratio_peak([(s.redis_used_memory, s.redis_maxmemory) for s in window])
    redis_clients = _ratio_peak([(s.redis_clients, s.redis_maxclients) for s in window])
    maxmemory = {s.redis_maxmemory for s in window if s.redis_maxmemory is not None}
    errors = Counter(e for s in window for e in s.errors)
    return {
        "basis": LIMITS_BASIS,
        "memory_basis": MEMORY_BASIS,
        "samples": len(window),
        "samples_outside_window": len(samples) - len(window),
        "cpu_span_s": round(analysis.span_s, 2),
        "components": {
            name: {
                "service": c.service,
                "limit_cpus": c.limits.cpus if c.limits else None,
                "limit_memory_bytes": c.limits.memory_bytes if c.limits else None,
                "cpu_peak_cores": _round(c.cores, 3),
                "cpu_peak_pct": _round(c.cpu_pct),
                "memory_peak_bytes": c.memory_bytes,
                "memory_peak_pct": _round(c.memory_pct),
                "restarts": c.restarts,
                **({"not_measured": c.why} if c.why else {}),
            }
            for name, c in analysis.components.items()
        },
        "postgres": {
            "connections_peak": pg[1] if pg else None,
            "max_connections": pg[2] if pg else None,
            "connections_peak_pct": _round(pg[0]) if pg else None,
        },
        "redis": {
            "used_memory_peak": max(
                (s.redis_used_memory for s in window if s.redis_used_memory is not None),
                default=None,
            ),
            "maxmemory": max(maxmemory) if maxmemory else None,
            "memory_peak_pct": _round(redis_memory[0]) if redis_memory else None,
            "memory_ratio": (
                "none: maxmemory is 0 (unlimited), its memory counts in the redis component's"
                if maxmemory == {0}
                else None
            ),
            "clients_peak": redis_clients[1] if redis_clients else None,
            "maxclients": redis_clients[2] if redis_clients else None,
            "clients_peak_pct": _round(redis_clients[0]) if redis_clients else None,
        },
        "saturation": {
            "parts_pct": {name: round(value, 2) for name, value in analysis.parts.items()},
            "highest": max(analysis.parts, key=analysis.parts.__getitem__, default=None),
            "missing": analysis.missing,
        },
        "errors": dict(errors.most_common()),
    }
