"""The `target` probes see: one object per session whose parts (HTTP client, TLS context, DSNs,
component control) are resolved when a probe first asks for them, in the style of
pytest-testinfra's `host`: its modules `pg`, `redis`, `logs`, `metrics`, `web` and `http` are
built on first use, and `requires(capability)` skips a probe the target cannot serve, naming
what is missing."""

from __future__ import annotations

import ipaddress
import secrets
import ssl
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from preflight.client import ChatClient
from preflight.evidence import secrets_of_url
from preflight.probe.logs import Logs
from preflight.probe.metrics import Metrics
from preflight.probe.pg import Postgres
from preflight.probe.redis import Redis
from preflight.probe.web import Web
from preflight.targets.base import (
    Capability,
    ClientNetwork,
    ComponentControl,
    Job,
    NetworkPartition,
    Target,
    TargetInfo,
    offered,
)

T = TypeVar("T")
LOOPBACK = "127.0.0.0/8"

# What a target file gives for each capability it can give: (its field, what to add).
TARGET_FILE_FIELDS: dict[Capability, tuple[str, str]] = {
    "control": ("control", "add stop, start and kill commands under control in the target file"),
    "observability": (
        "prometheus_url",
        "add the URL of the Prometheus that watches it to the target file",
    ),
    "backups": (
        "backup_dir",
        "add the chatsdk.backup repository, readable from here, as backup_dir in the target file",
    ),
    "metrics": (
        "metrics_urls",
        "add each API worker's internal /metrics URL under metrics_urls in the target file",
    ),
    "logs": (
        "log_files",
        "list the API's and the edge's log files under log_files in the target file",
    ),
    "jobs": ("jobs", "add the commands that run the system's jobs under jobs in the target file"),
    "error_tracking": (
        "error_events",
        "name the file your error tracker writes its received events to (one JSON line per "
        "Sentry event) under error_events in the target file",
    ),
    "cert_renewal": (
        "cert_renewal",
        "add the command that renews the edge's certificate now (and how the deployment renews "
        "on its own) under cert_renewal in the target file",
    ),
    "grafana": (
        "grafana_url",
        "add the URL of its Grafana (with a viewer's basic-auth credentials) to the target file",
    ),
    "placement": (
        "placement",
        "declare each component's service and node (and its cpus and memory_bytes limits) "
        "under placement in the target file",
    ),
}


# Capabilities only one kind of target gives, with the option that starts it: a target file
# cannot give them, and neither can the native target.
ONLY_ON: dict[Capability, str] = {
    "log_store": "a target preflight runs (--target native or containers), whose central log "
    "store it reads; a target file cannot name one yet",
    "partitions": "--target containers, where the run owns the networks between the API "
    "containers and their stores",
}


class ProbeTarget:
    """A running system under test, or one that starts on first use and stops on `close()`."""

    def __init__(
        self,
        info: TargetInfo | None = None,
        *,
        start: Target | None = None,
        on_secrets: Callable[[Iterable[str]], None] = lambda _secrets: None,
    ) -> None:
        if (info is None) == (start is None):
            raise ValueError("ProbeTarget needs exactly one of a running target's info or a start")
        self._info = info
        self._start = start
        self._entered = False
        self._on_secrets = on_secrets
        if info is not None:
            on_secrets(self._secrets_of(info))

    @property
    def info(self) -> TargetInfo:
        if self._info is None:
            assert self._start is not None
            info = self._start.__enter__()  # a target that fails to start cleans up after itself
            self._entered = True
            self._on_secrets(self._secrets_of(info))
            self._info = info
        return self._info

    @property
    def started(self) -> bool:
        return self._info is not None

    def close(self) -> None:
        """Stop what this object started (nothing for a target that was already running)."""
        if "http" in self.__dict__:
            self.http.close()
        if self._entered and self._start is not None:
            self._entered = False
            self._start.__exit__(None, None, None)

    # -- where the system is -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def edge_url(self) -> str:
        return self.info.edge.url

    @property
    def edge_address(self) -> tuple[str, int]:
        """Host and port of the edge, for TLS and socket probes."""
        url = urlsplit(self.info.edge.url)
        return url.hostname or "", url.port or 443

    @property
    def callback_host(self) -> str | None:
        """Where a probe listens for what the system sends out (Drills.callback_host); an edge
        on this machine's loopback implies 127.0.0.1. None: the system cannot reach this
        machine as far as anything says."""
        if self.info.drills.callback_host is not None:
            return self.info.drills.callback_host
        clients = self.clients
        return "127.0.0.1" if clients is not None and clients.sources == LOOPBACK else None

    @property
    def clients(self) -> ClientNetwork | None:
        """Where this machine can be many clients of the edge (Edge.clients), or None: only one
        client address reaches it from here. An edge on loopback gives 127.0.0.0/8 itself."""
        if self.info.edge.clients is not None:
            return self.info.edge.clients
        host, port = self.edge_address
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        return ClientNetwork((host, port), LOOPBACK) if loopback else None

    def client_address(self) -> str | None:
        """A random address of `clients.sources` for one more client of its own (None without
        `clients`); never the network's first 256 addresses, which its own hosts use
        (127.0.0.1, a bridge's gateway and containers)."""
        clients = self.clients
        if clients is None:
            return None
        network = ipaddress.ip_network(clients.sources)
        first = 256 if network.num_addresses > 512 else 1
        return str(network[first + secrets.randbelow(network.num_addresses - first - 1)])

    @property
    def ws_url(self) -> str:
        return self.http.ws_url

    @property
    def http_url(self) -> str:
        """The edge's plain-HTTP address; skips the probe when the target gives none."""
        return self._optional(self.info.edge.http_url, "plain-HTTP URL", "http_url")

    @property
    def pg_dsn(self) -> str:
        return self._optional(self.info.stores.postgres_dsn, "PostgreSQL DSN", "postgres_dsn")

    @property
    def prometheus_url(self) -> str:
        """The Prometheus that watches the target; skips the probe when the target names none."""
        url = self.info.observability.prometheus_url
        if not url:
            field, hint = TARGET_FILE_FIELDS["observability"]
            pytest.skip(f"target {self.info.name} gives no {field}; {hint} to decide this item.")
        return url

    @property
    def jwt_secret(self) -> str:
        """The API's JWT signing secret; skips the probe when the target does not share it."""
        return self._optional(self.info.jwt_secret, "JWT signing secret", "jwt_secret")

    @property
    def redis_url(self) -> str:
        return self._optional(self.info.stores.redis_url, "Redis URL", "redis_url")

    @property
    def backup_dir(self) -> Path:
        """The backup repository (chatsdk.backup's catalogue.json and backups), readable from
        here; skips the probe when the target gives none."""
        return Path(
            self._optional(str(self.info.backups.dir or ""), "backup repository", "backup_dir")
        )

    @property
    def upload_dir(self) -> Path:
        """The upload store (local storage), readable from here; skips without one."""
        return Path(
            self._optional(str(self.info.stores.upload_dir or ""), "upload store", "upload_dir")
        )

    def partitions(self) -> NetworkPartition:
        """Cut the API off a store over the network and heal it (drills); skips when the target
        cannot, naming the capability."""
        self.requires("partitions")
        assert self.info.drills.partitions is not None
        return self.info.drills.partitions

    def job(self, name: str) -> Job:
        """A job of the system, run on request (drills); skips when the target cannot run it."""
        return self._drill_part(
            self.info.drills.jobs, name, f"cannot run the {name} job (it runs: {{known}})", "jobs"
        )

    def worker_url(self, worker: str) -> str | None:
        """An API worker's own plain-HTTP address by its control name, where the target ties
        the two (None elsewhere)."""
        return self.info.drills.worker_urls.get(worker)

    def control(self, component: str) -> ComponentControl:
        """Stop, start and kill one component (drills); skips when the target cannot."""
        return self._drill_part(
            self.info.drills.control,
            component,
            f"gives no control over {component} (it controls: {{known}})",
            "control",
        )

    def _drill_part(self, parts: Mapping[str, T], name: str, missing: str, field: str) -> T:
        """`parts[name]`, or a skip saying what the target has instead and what to add."""
        part = parts.get(name)
        if part is None:
            known = ", ".join(sorted(parts)) or "none"
            pytest.skip(
                f"target {self.info.name} {missing.format(known=known)}; add {field}.{name} to "
                "the target file to run this drill."
            )
        return part

    # -- what it offers ----------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the target's info gives (see targets/base.py `offered`)."""
        return offered(self.info)

    def requires(self, capability: Capability) -> None:
        """Skip the probe unless the target offers `capability`, saying why it does not: the
        target's own reason where it gives one (a part it runs without), else what to add to a
        target file."""
        if capability in self.capabilities:
            return
        self.runs(capability)
        if capability in ONLY_ON:
            pytest.skip(
                f"target {self.info.name} does not offer `{capability}`: only "
                f"{ONLY_ON[capability]}."
            )
        known = TARGET_FILE_FIELDS.get(capability)
        if known is None:
            pytest.skip(
                f"target {self.info.name} does not offer `{capability}`: only a target preflight "
                "runs on this machine does (--target native)."
            )
        field, hint = known
        pytest.skip(f"target {self.info.name} gives no {field}; {hint} to decide this item.")

    def runs(self, part: str) -> None:
        """Skip the probe when the target says it runs without `part` (with its reason)."""
        why = self.info.deployment.runs_without.get(part)
        if why is not None:
            pytest.skip(why)

    # -- how to talk to it -------------------------------------------------------------------

    @cached_property
    def pg(self) -> Postgres:
        """The target's PostgreSQL with its DSN; skips on first use without one."""
        return Postgres(self.pg_dsn)

    @cached_property
    def redis(self) -> Redis:
        """The target's Redis with its URL; skips on first use without one."""
        return Redis(self.redis_url)

    @cached_property
    def logs(self) -> Logs:
        """The target's log files; a read skips the probe when it names none."""
        return Logs(self._log_files)

    @cached_property
    def metrics(self) -> Metrics:
        """The API workers' /metrics (a read skips without metrics URLs) and runtime reports."""
        return Metrics(self._metrics_urls, lambda: self.admin)

    @cached_property
    def web(self) -> Web:
        """The web client the edge serves."""
        return Web(self.info.name, self.info.edge.url, lambda: self.http)

    def _log_files(self) -> tuple[Path, ...]:
        self.requires("logs")
        return self.info.observability.log_files

    def _metrics_urls(self) -> tuple[str, ...]:
        self.requires("metrics")
        return self.info.observability.metrics_urls

    @cached_property
    def http(self) -> ChatClient:
        """A client for the edge that trusts the target's CA; `.as_admin(target.admin_key)`,
        `.as_app(key)` and `.as_user(token)` add credentials."""
        return ChatClient.for_target(self.info)

    def own_client(self) -> ChatClient:
        """A client for the edge from an address of its own, where this machine can be many
        clients (`clients`); else the shared one. For probes that trip the per-address limits
        on purpose (floods, forged credentials): the limits of the address the other probes
        share stay untouched."""
        clients, source = self.clients, self.client_address()
        if clients is None or source is None:
            return self.http
        return self.http.from_address(source, clients.address)

    @property
    def admin(self) -> ChatClient:
        return self.http.as_admin(self.info.admin_key)

    @property
    def admin_key(self) -> str:
        return self.info.admin_key

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh client context that trusts the target's CA (system CAs when it names none)."""
        ca = self.info.edge.ca_file
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in evidence: the admin key and every password."""
        return self._secrets_of(self.info)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _secrets_of(info: TargetInfo) -> tuple[str, ...]:
        found = [info.admin_key, info.jwt_secret or ""]
        for url in (
            info.stores.postgres_dsn,
            info.stores.redis_url,
            info.observability.grafana_url,
        ):
            found += secrets_of_url(url)
        return tuple(dict.fromkeys(s for s in found if s))

    def _optional(self, value: str | None, what: str, field: str) -> str:
        if not value:
            pytest.skip(
                f"target {self.info.name} gives no {what}; add {field} to the target file "
                "to decide this item."
            )
        return value

    def __repr__(self) -> str:
        if self._info is None:
            return f"<ProbeTarget not started ({type(self._start).__name__})>"
        return f"<ProbeTarget {self._info.name} ({self._info.kind}) at {self._info.edge.url}>"
