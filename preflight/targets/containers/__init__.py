"""The containers target: the deployment system/deploy ships, built and run on this machine.

`ContainersTarget` reads system/deploy/docker-compose.yml (compose.py), builds every image it
names from the Dockerfiles in system/deploy on local Debian bases (images.py; nothing is pulled),
and starts the services with testcontainers' container API: the file's networks (internal where
it says so), volumes, secrets, health checks, restart policies, limits and hardening, replicas
as containers of their own. Only what a test deployment must differ in is overridden, and each
override is listed in `OVERRIDES`.

Why the container API over the parsed file rather than testcontainers' compose support: that
support drives the `docker compose` v2 plugin, which Debian 12 does not package, and the drills
need each container by name (kill, stop, disconnect from a network)."""

from __future__ import annotations

import contextlib
import secrets as secrets_module
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from preflight.errors import TargetUnavailable
from preflight.polling import until
from preflight.targets.base import (
    Backups,
    Capability,
    Deployment,
    Drills,
    Edge,
    Job,
    Observability,
    ShellJob,
    Stores,
    TargetDescription,
    TargetInfo,
    TargetKind,
    Unsupervised,
    offered,
)
from preflight.targets.containers import acme, errortracking, logstore, monitoring
from preflight.targets.containers import clients as client_net
from preflight.targets.containers import compose as compose_file
from preflight.targets.containers.compose import Compose, Service, replicas_of
from preflight.targets.containers.control import ContainerControl
from preflight.targets.containers.cpu import ContainerCpuLimits
from preflight.targets.containers.engine import (
    LAUNCHER_LABEL,
    RUN_LABEL,
    configure_testcontainers,
    docker_available,
    engine,
    launcher,
    sweep,
)
from preflight.targets.containers.failover import PRIMARY, STANDBY, ContainersFailover
from preflight.targets.containers.images import IMAGES, build_all
from preflight.targets.containers.logs import LogFollower
from preflight.targets.containers.partition import API_SERVICES, Member, NetworkCut, store_networks
from preflight.targets.containers.releases import ContainerReleases
from preflight.targets.containers.restore import run_restore
from preflight.targets.describe import describe_running
from preflight.targets.edge import EdgeConfig, render_edge
from preflight.targets.errortracker import ErrorTracker
from preflight.targets.pki import Pki, make_pki
from preflight.targets.procs import free_port

__all__ = ["OVERRIDES", "ContainersTarget", "docker_available"]

EDGE_SERVICE = "nginx"
EDGE_HTTPS_PORT = 8443
EDGE_HTTP_PORT = 8080
API_PORT = 8080
STORES = ("postgres", "redis")
TLS_ROOT_IN_CONTAINERS = "/run/secrets/postgres_ca"  # the CA the database URLs verify with
HOST_NETWORK = "host"  # the run's own, for publishing the stores' ports (OVERRIDES)

# What this target changes in the compose file's deployment, and why. Nothing else differs.
OVERRIDES: Mapping[str, str] = {
    "published ports": "every published port is bound to 127.0.0.1 on a free port, never to "
    "all addresses: load, scan and fault traffic stays on this machine",
    "stores and workers published": "PostgreSQL, Redis and each API container are also "
    "published on 127.0.0.1, for the probes that read them directly (a production host "
    "publishes only the edge); the stores join a network of the run's own for that (`host`, "
    "which nothing else joins), since the engine publishes no port of a container on internal "
    "networks only",
    "CHATSDK_ALLOWED_ORIGINS": "the edge's own https://localhost:<port> origin (127.0.0.1 "
    "without an ACME client), where the browser journeys open the web client, instead of "
    "https://chat.example.com",
    "./edge": "the edge configuration rendered from system/nginx for the API containers' names "
    "and the certificate the certbot service keeps in the certs volume (a compose file without "
    "an ACME client gets one minted by the run); NGINX reads it where the run wrote it "
    "(the run's folder mounted at the same path, `nginx -p <folder> -c <file>`) instead of at "
    "/etc/nginx, and writes its access and error logs there for the log probes (and to the "
    "central log store, whose name it waits for: the run connects the edge to the `logging` "
    "network just after starting it)",
    "client network": "the edge also joins a network of the run's own, half of whose range "
    "is routed to this machine, so probes can be clients from many addresses (the engine's "
    "published ports show every client of this machine as one address); nothing else joins it",
    "CHATSDK_ACME_DIRECTORY": "pebble, Let's Encrypt's ACME test server (built here from "
    "Debian's package), at https://pebble:14000/dir on the run's edge network instead of Let's "
    "Encrypt, which cannot reach this machine; certbot trusts pebble's listener certificate "
    "(REQUESTS_CA_BUNDLE, minted by the run) and the probes trust the root pebble makes at its "
    "start, read from its management port (published on 127.0.0.1)",
    "CHATSDK_EDGE_DOMAIN": "localhost, the name this machine reaches the edge's published port "
    "by, instead of chat.example.com; pebble's container resolves it to the edge container "
    "(its /etc/hosts), as public DNS resolves the public name to the host, so its http-01 "
    "validation crosses the run's network to the edge's plain-HTTP port",
    "first certificate": "once pebble runs (it starts after the edge, whose address it needs), "
    "the target runs the certbot service's own `edge-certificate once` instead of waiting "
    "CHATSDK_RENEW_RETRY for its next try; until then the edge serves the service's self-signed "
    "bootstrap certificate",
    "secret files": "fresh random values, written to a private folder of the run",
    "CHATSDK_DEMO": "1 on the API containers, as on a staging deployment: the browser journeys "
    "sign in through the demo endpoint",
    "hostname": "each container's host name is its replica's name (api-1, api-2, realtime-1) "
    "instead of its container id: the API workers take their ids from it, so each reports the "
    "name the drills know it by",
    "../monitoring": "Prometheus and Alertmanager read the run's rendering of system/monitoring "
    "(containers/monitoring.py): every scrape (the container exporter's every 5 s), evaluation "
    "and DNS refresh every 2 s, jobs of "
    "services the file does not run left out, an always-firing watchdog rule, receivers that "
    "deliver nowhere; Prometheus resends firing alerts every 2 s; Prometheus and Alertmanager "
    "are published on 127.0.0.1 for the probes; the alert drill renders its own rules and "
    "routes there for its duration and reloads both (SIGHUP)",
    "CONTAINER_EXPORTER_LABEL": "the container exporter reports this run's containers only: "
    "the engine is shared",
    "CHATSDK_SENTRY_DSN": "the API and realtime containers report their errors to the run's "
    "stand-in for Sentry's ingestion (containers/errortracking.py), a process of this machine "
    "listening on its address on the API's network with a way out (`edge`), instead of to no "
    "tracker: the compose file sets no DSN, and a production deployment sets its own Sentry's",
    "API CPU limits during the scaling step": "for the load run's PERF-HSCALE step only, every "
    "container the edge sends /v1 to (api and realtime replicas) is limited live to the same "
    "few CPUs (`docker update --cpus`, the profile's scaling `cpus_per_worker`) instead of the "
    "file's 2.0 and 1.0, and put back to the file's limits after the step: on one host the "
    "file's limits exceed its cores, so halving the workers would halve nothing the workers "
    "are bounded by, and the step would measure the host",
}


@dataclass(frozen=True)
class _Layout:
    """What the run made for the services to use."""

    tags: Mapping[str, str]  # compose image name -> the tag built here
    networks: Mapping[str, Any]  # compose network -> testcontainers Network
    volumes: Mapping[str, str]  # compose volume -> the engine's volume name
    secret_files: Mapping[str, Path]
    edge_conf: Path | None  # None: the compose file has no edge (then the start fails)
    edge_url: str
    pebble: acme.PebbleFiles | None  # the run's ACME CA, where the compose file has a client
    edge_ports: Mapping[int, int]  # the edge's container port -> its port on 127.0.0.1
    monitoring: Path  # the rendered system/monitoring Prometheus and Alertmanager mount
    sentry_dsn: str | None  # the run's error tracker, where the API's networks reach this machine
    log_server: tuple[str, int] | None  # the central log store, where the compose file runs one


def _control_name(service: Service, replica: str) -> str:
    """The drills' name for a container: the service's, or the replica's where there are
    several (api-1, api-2), as the native target names its workers."""
    return replica if service.replicas > 1 else service.name


def _edge_upstreams(plan: Compose) -> list[tuple[Service, str]]:
    """The containers the edge sends /v1 to (its `api` upstream), as (service, replica): the
    API's and the realtime service's, the same image, either serving any request."""
    return [
        (service, replica)
        for service in plan.services.values()
        if service.name in API_SERVICES
        for replica in replicas_of(service)
    ]


def _published(service: Service, layout: _Layout) -> dict[int, int]:
    """Container port -> port on 127.0.0.1 (OVERRIDES: published ports)."""
    if service.name == EDGE_SERVICE:
        return dict(layout.edge_ports)
    inside = {
        "postgres": 5432,
        "redis": 6379,
        "api": API_PORT,
        "realtime": API_PORT,
        **monitoring.PUBLISHED,
    }
    return {inside[service.name]: free_port()} if service.name in inside else {}


@dataclass
class _Running:
    service: Service
    name: str  # the replica's name and DNS alias: api-1, postgres-1, ...
    container: Any  # testcontainers DockerContainer


class ContainersTarget(Unsupervised):
    """`with ContainersTarget() as info:` builds the images, starts the compose file's services
    and gives their addresses; leaving stops and removes every container, network and volume."""

    kind: TargetKind = "containers"

    def __init__(
        self,
        log: Callable[[str], None] = lambda _m: None,
        timeout: float = 300,
        compose_path: Path = compose_file.COMPOSE_FILE,
        restore_from: Path | None = None,
        api_env: Mapping[str, str] | None = None,
        *,
        workers_primary_only: bool = False,
    ) -> None:
        self.log = log
        self.restore_from = restore_from
        # What the restore of `restore_from` reported, once it ran (RestoredTarget).
        self.restore_report: dict[str, Any] | None = None
        # Test-only: more environment for the API containers (a fault switch, tests/drills).
        self.api_env = dict(api_env or {})
        # Test-only: the API's database URL names the primary alone, not its standby (a
        # deployment whose workers cannot follow a failover, tests/drills).
        self.workers_primary_only = workers_primary_only
        self.timeout = timeout
        self.compose_path = compose_path
        self.run = f"preflight-{secrets_module.token_hex(4)}"
        self.info: TargetInfo | None = None
        self._client: Any = None
        self._stack = contextlib.ExitStack()
        self._dir: Path | None = None
        self._running: dict[str, _Running] = {}
        self._networks_made: dict[str, Any] = {}  # compose network -> testcontainers Network
        self._tc_clients: list[Any] = []  # testcontainers' own engine clients, closed on exit
        self._log_followers: dict[str, LogFollower] = {}  # by replica
        self._client_sources: str | None = None  # the client network's routed range
        self._clients_network: Any = None
        self._deployed_at = 0.0
        self._layout: _Layout | None = None
        self._error_tracker: ErrorTracker | None = None

    # -- the Target contract ---------------------------------------------------------------

    def __enter__(self) -> TargetInfo:
        reason = docker_available()
        if reason is not None:
            raise TargetUnavailable(
                f"containers target: {reason}; start Docker (as root: `dockerd &`, or run "
                "scripts/setup.sh), point DOCKER_HOST at an engine, or use `--target native`"
            )
        try:
            self.info = self._start()
        except BaseException:
            self.__exit__()
            raise
        return self.info

    def __exit__(self, *exc: object) -> None:
        self.info = None
        for follower in self._log_followers.values():  # first: a removed container is not followed
            follower.stop()
        self._log_followers.clear()
        with contextlib.suppress(Exception):
            self._stack.close()  # removes the containers, networks and the client route
        for tc_client in self._tc_clients:
            with contextlib.suppress(Exception):
                tc_client.client.close()
        self._tc_clients.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                sweep(self._client, self.log, run=self.run)
            self._client.close()
            self._client = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def capabilities(self) -> frozenset[Capability]:
        return offered(self.info) | {"restore"}

    def restore(self, backup: Path, log: Callable[[str], None] | None = None) -> ContainersTarget:
        """A new deployment of the same compose file (its own containers, networks, volumes and
        secrets) whose database and upload volume hold `backup` before its API containers
        start. Enter it to start it; its `restore_report` then says what the restore reported."""
        return ContainersTarget(
            log=log or self.log,
            timeout=self.timeout,
            compose_path=self.compose_path,
            restore_from=backup,
            api_env=self.api_env,
            workers_primary_only=self.workers_primary_only,
        )

    def describe(self) -> TargetDescription:
        """Versions where the published ports reach PostgreSQL and Redis, and the digests of
        the edge configuration this run rendered."""
        edge_dir = self._dir / "edge" if self._dir is not None else None
        return describe_running(self.info, edge_dir)

    # -- starting ----------------------------------------------------------------------------

    def _start(self) -> TargetInfo:
        configure_testcontainers()
        self._client = engine()
        sweep(self._client, self.log)
        client_net.sweep_routes(self._client)
        plan = compose_file.load(self.compose_path)
        self._dir = Path(tempfile.mkdtemp(prefix="preflight-containers-"))
        self._dir.chmod(0o711)  # NGINX workers (nobody) reach the web client; secrets/ is 0700
        # One CA of the run: the edge's certificate, and PostgreSQL's under the names the API
        # containers reach the primary and its standby by (the clients verify both).
        pki = make_pki(
            self._dir / "pki", hostnames=("localhost", EDGE_SERVICE, "postgres", "postgres-standby")
        )
        secret_files, values = _write_secrets(
            self._dir / "secrets", plan, pki, with_standby=not self.workers_primary_only
        )
        https_port, http_port = free_port(), free_port()
        client = acme.acme_client(plan)
        pebble = acme.PebbleFiles.write(self._dir / "acme") if client else None
        edge_url = f"https://{acme.EDGE_NAME if client else '127.0.0.1'}:{https_port}"
        tags, networks = self._images(plan), self._networks(plan)
        self._error_tracker = self._start_error_tracker(plan)
        layout = _Layout(
            tags=tags,
            networks=networks,
            volumes=self._volumes(plan),
            secret_files=secret_files,
            edge_conf=(
                self._render_edge(plan, pki, pebble.listener if pebble else None)
                if EDGE_SERVICE in plan.services
                else None
            ),
            monitoring=monitoring.render(self._dir / "monitoring", plan.services),
            edge_url=edge_url,
            pebble=pebble,
            edge_ports={EDGE_HTTPS_PORT: https_port, EDGE_HTTP_PORT: http_port},
            sentry_dsn=self._error_tracker.dsn if self._error_tracker else None,
            log_server=logstore.log_server(plan),
        )
        self._deployed_at = time.time()  # the first container of this release starts now
        self._layout = layout
        for wave in plan.waves():
            for name in wave:
                for replica in replicas_of(plan.services[name]):
                    self._start_container(plan.services[name], replica, layout)
            for name in wave:
                self._wait_ready(plan, plan.services[name])
            if self.restore_from is not None and "postgres" in wave:
                self._restore(plan, layout, values, self.restore_from)
        conf = layout.edge_conf
        if conf is None:
            raise TargetUnavailable(
                f"containers target: {plan.path.name} has no {EDGE_SERVICE} service, so nothing "
                "answers at the edge"
            )
        ca = self._dir / "pki" / "ca.pem"
        renewal = None
        if client is not None and pebble is not None:
            ca, renewal = self._issue(client, layout, pebble)
        context = ssl.create_default_context(cafile=str(ca))
        # With an ACME client, ready is the edge answering at all: whether it then serves the
        # certificate pebble issued is the deployment's to show and the probes' to judge.
        ready = context if renewal is None else acme.any_certificate()
        if not until(lambda: _ok(f"{edge_url}/v1/health/ready", ready), self.timeout):
            edge = self._running[f"{EDGE_SERVICE}-1"].container.get_wrapped_container()
            tail = edge.logs(tail=5).decode(errors="replace").strip()
            raise TargetUnavailable(
                f"containers target: the edge at {edge_url} is not ready within "
                f"{self.timeout:.0f} s (its last lines: {tail[-400:]})"
            )
        edge_id = str(self._running[f"{EDGE_SERVICE}-1"].container.get_wrapped_container().id)
        if renewal is not None and not until(
            # Served by every worker: right after the reload that loads it, workers of the old
            # configuration may still accept connections (and serve the bootstrap certificate)
            # until they have taken in that they are shutting down.
            lambda: _ok(f"{edge_url}/v1/health/live", context) and not _reloading(edge_id),
            acme.SERVED_WITHIN_S,
        ):
            self.log(
                f"the edge does not serve the certificate pebble issued within "
                f"{acme.SERVED_WITHIN_S:.0f} s of its issuance; the probes judge what it serves"
            )
        if self._error_tracker is not None:
            self._error_tracker.wait_ready(self.timeout)
        return self._info(plan, edge_url, http_port, ca, values, edge_conf=conf, renewal=renewal)

    def _images(self, plan: Compose) -> dict[str, str]:
        """compose image name -> the tag built here for its Dockerfile."""
        by_dockerfile = {image.dockerfile: image for image in IMAGES}
        wanted = []
        for service in plan.services.values():
            if service.dockerfile is None or service.dockerfile not in by_dockerfile:
                raise TargetUnavailable(
                    f"containers target: service {service.name} of {plan.path.name} does not "
                    "build its image from a Dockerfile in system/deploy, and no registry "
                    "answers here to pull it"
                )
            wanted.append(by_dockerfile[service.dockerfile])
        names = {i.name for i in wanted}
        needed = [i for i in IMAGES if i.name in names or any(w.base == i.name for w in wanted)]
        built = build_all(self._client, self.log, needed)
        return {
            service.image: built[by_dockerfile[service.dockerfile or ""].name]
            for service in plan.services.values()
        }

    def _labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run, LAUNCHER_LABEL: launcher()}

    def _run_label(self) -> str:
        return f"{RUN_LABEL}={self.run}"

    def _networks(self, plan: Compose) -> dict[str, Any]:
        from testcontainers.core.network import Network  # noqa: PLC0415

        made = {}
        own = {HOST_NETWORK: False, client_net.NETWORK: False}
        for name, internal in {**plan.networks, **own}.items():
            network = Network(
                docker_network_kw={"internal": internal, "labels": self._labels()},
            )
            network.name = f"{self.run}-{name}"
            self._tc_clients.append(network._docker)
            made[name] = self._stack.enter_context(network)
        self._networks_made = made
        self._clients_network = made[client_net.NETWORK]._network
        sources = client_net.route(self._clients_network, self.log)
        if sources is not None:
            self._stack.callback(client_net.unroute, sources)
        self._client_sources = sources
        return made

    def _start_error_tracker(self, plan: Compose) -> ErrorTracker | None:
        """The run's error tracker (errortracking.py; OVERRIDES: CHATSDK_SENTRY_DSN), where the
        API containers can reach this machine."""
        assert self._dir is not None
        host = self._gateway(plan, "api")
        if host is None:
            self.log(
                f"no error tracker: every network of the api service of {plan.path.name} is "
                "internal, so its containers cannot reach this machine"
            )
            return None
        return errortracking.start(self._dir / "errortracker", host, self._stack, self.log)

    def _volumes(self, plan: Compose) -> dict[str, str]:
        made = {}
        for name in plan.volumes:
            volume = self._client.volumes.create(name=f"{self.run}-{name}", labels=self._labels())
            made[name] = volume.name
        return made

    def _render_edge(self, plan: Compose, pki: Pki, acme_listener: Pki | None) -> Path:
        """nginx.conf for this run (its absolute paths are under the run's folder): for the
        certificate the compose file's ACME client keeps, else for the run's own `pki`."""
        assert self._dir is not None
        client = acme.acme_client(plan)
        if client is not None and acme_listener is not None:
            pki, certificate, webroot = acme_listener, acme.edge_certificate(client), acme.WEBROOT
        else:
            certificate, webroot = None, None
        upstreams = [(replica, API_PORT) for _service, replica in _edge_upstreams(plan)]
        # The edge reads its certificate where the container mounts the run's folder.
        conf = render_edge(
            EdgeConfig(
                workdir=self._dir / "edge",
                https_port=EDGE_HTTPS_PORT,
                http_port=EDGE_HTTP_PORT,
                upstreams=upstreams,
                pki=pki,
                listen_address="0.0.0.0",  # noqa: S104 - inside its own network namespace
                certificate=certificate,  # when set, pki (pebble's listener) is not read
                acme_webroot=webroot,
                log_server=logstore.log_server(plan),
            )
        )
        return conf

    def _start_container(
        self,
        service: Service,
        replica: str,
        layout: _Layout,
        image: str | None = None,
        ports: Mapping[int, int] | None = None,
    ) -> None:
        """Start one replica: on the service's image built for this run unless `image` says
        otherwise (a release, releases.py), published on free ports unless `ports` says which."""
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415

        joins = list(service.networks)
        if service.name in STORES:
            joins.insert(0, HOST_NETWORK)  # OVERRIDES: stores published
        if service.name == EDGE_SERVICE:
            joins.append(client_net.NETWORK)  # OVERRIDES: client network
        first, *others = [layout.networks[n] for n in joins]
        image = image or layout.tags[service.image]
        c = DockerContainer(
            image,
            name=f"{self.run}-{replica}",
            network=first,
            network_aliases=[replica, service.name],
            **self._engine_options(service, replica),
        )
        c.tmpfs = {path: "" for path in service.tmpfs}
        for key, value in self._environment(service, layout).items():
            c.with_env(key, value)
        if layout.pebble is not None and acme.DIRECTORY_ENV in service.environment:
            c.with_volume_mapping(str(layout.pebble.listener.ca_cert), acme.CA_BUNDLE, "ro")
        command = monitoring.command(service.name, list(service.command or ()))
        if service.name == EDGE_SERVICE:  # OVERRIDES: ./edge
            conf = layout.edge_conf
            assert conf is not None
            command = logstore.edge_command(
                layout.log_server,
                ["nginx", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)],
            )
            c.with_volume_mapping(str(self._dir), str(self._dir), "rw")
        if command:
            c.with_command(command)
        for secret in service.secrets:
            c.with_volume_mapping(str(layout.secret_files[secret]), f"/run/secrets/{secret}", "ro")
        for source, target, mode in self._mounts(service, layout):
            c.with_volume_mapping(source, target, mode)
        for inside, outside in (ports or _published(service, layout)).items():
            c.ports[inside] = ("127.0.0.1", outside)  # type: ignore[index,assignment]
        self._tc_clients.append(c.get_docker_client())
        self.log(f"starting {replica} ({image})")
        try:
            started = c.start()
            self._stack.callback(_remove, started)
            for network in others:
                network._network.connect(
                    started.get_wrapped_container(), aliases=[replica, service.name]
                )
        except Exception as exc:  # docker.errors.APIError, requests errors: say which and why
            cause = getattr(exc, "explanation", None) or str(exc)
            raise TargetUnavailable(
                f"containers target: {replica} (image {image}) did not start: {str(cause)[:300]}"
            ) from exc
        self._running[replica] = _Running(service, replica, started)
        self._follow_logs(replica, started)

    def _environment(self, service: Service, layout: _Layout) -> dict[str, str]:
        """The compose file's environment of a service, with the target's OVERRIDES."""
        env = {**service.environment, **monitoring.environment(service.name, self._run_label())}
        if layout.pebble is not None and acme.DIRECTORY_ENV in env:  # the run's ACME CA
            env = {**env, **acme.client_environment(service)}
        if "CHATSDK_ALLOWED_ORIGINS" in env:  # the API's containers
            env["CHATSDK_ALLOWED_ORIGINS"] = layout.edge_url
            env["CHATSDK_DEMO"] = "1"
        if service.name in API_SERVICES:
            if layout.sentry_dsn is not None:
                env["CHATSDK_SENTRY_DSN"] = layout.sentry_dsn
            env.update(self.api_env)
        return env

    def _replace(self, replica: str, image: str) -> Any:
        """Remove `replica`'s container (stopped by the caller) and start its successor on
        `image`: the same name, aliases, networks, settings and published ports. The new
        container (docker SDK), started, not yet ready."""
        assert self._layout is not None
        old = self._running[replica]
        old.container.get_wrapped_container().reload()
        ports = {
            int(inside.split("/")[0]): int(bound[0]["HostPort"])
            for inside, bound in (
                old.container.get_wrapped_container().attrs["HostConfig"]["PortBindings"] or {}
            ).items()
        }
        old.container.get_wrapped_container().remove(force=True)
        self._start_container(old.service, replica, self._layout, image=image, ports=ports)
        return self._running[replica].container.get_wrapped_container()

    def _engine_options(self, service: Service, replica: str) -> dict[str, Any]:
        """What the compose file says about the container, in the engine API's words."""
        options: dict[str, Any] = {
            "labels": {**self._labels(), "io.preflight.service": service.name},
            "restart_policy": {"Name": service.restart},
            "read_only": service.read_only,
            "security_opt": list(service.security_opt) or None,
            "cap_drop": list(service.cap_drop) or None,
            "hostname": replica,
            "healthcheck": dict(service.healthcheck) if service.healthcheck else None,
            "nano_cpus": service.nano_cpus,
            "mem_limit": service.mem_limit,
        }
        return {key: value for key, value in options.items() if value is not None}

    def _mounts(self, service: Service, layout: _Layout) -> list[tuple[str, str, str]]:
        mounts = []
        for mount in service.mounts:
            if mount.named:
                source = layout.volumes[mount.source]
            elif service.name == EDGE_SERVICE and mount.source.rstrip("/") == "./edge":
                continue  # the run's folder is mounted instead (OVERRIDES)
            elif mount.source.rstrip("/") == monitoring.MONITORING_MOUNT:
                source = str(layout.monitoring)  # OVERRIDES: ../monitoring
            else:
                source = str((self.compose_path.parent / mount.source).resolve())
            mounts.append((source, mount.target, "ro" if mount.read_only else "rw"))
        return mounts

    def _follow_logs(self, replica: str, container: Any) -> None:
        """Copy the container's output into <run>/logs/<replica>.log for the log probes."""
        assert self._dir is not None
        path = self._dir / "logs" / f"{replica}.log"
        path.parent.mkdir(exist_ok=True)
        previous = self._log_followers.pop(replica, None)
        if previous is not None:  # the container it followed was replaced
            previous.stop()
        follower = LogFollower(str(container.get_wrapped_container().id), path)
        follower.start()
        self._log_followers[replica] = follower

    def _issue(
        self, client: Service, layout: _Layout, pebble: acme.PebbleFiles
    ) -> tuple[Path, acme.AcmeRenewal]:
        """Start pebble where it resolves the edge's name to the edge container, have the ACME
        client obtain its first certificate, and read pebble's root (the probes' trust)."""
        assert self._dir is not None
        edge = self._running[f"{EDGE_SERVICE}-1"].container.get_wrapped_container()
        edge_network = self._running[f"{EDGE_SERVICE}-1"].service.networks[0]
        pebble.resolve_edge(acme.address_on(edge, f"{self.run}-{edge_network}"))
        tag = build_all(self._client, self.log, [i for i in IMAGES if i.name == acme.PEBBLE])
        c = acme.pebble_container(
            tag[acme.PEBBLE],
            f"{self.run}-{acme.PEBBLE}",
            layout.networks[edge_network],
            self._labels(),
            pebble,
        )
        self._tc_clients.append(c.get_docker_client())
        self.log(f"starting {acme.PEBBLE} (the run's ACME CA)")
        started = self._stack.enter_context(c)
        certbot = self._running[replicas_of(client)[0]].container.get_wrapped_container()
        acme.first_certificate(certbot, self.log)
        management = f"https://127.0.0.1:{started.get_exposed_port(acme.MANAGEMENT_PORT)}"
        root = acme.fetch_root(management, pebble.listener, pebble.folder / "root.pem", 60)
        return root, acme.AcmeRenewal(certbot, acme.schedule_of(client))

    def _wait_ready(self, plan: Compose, service: Service) -> None:
        """Wait, as `docker-compose up` does, for what others depend on: every replica's health
        check where a dependant asks for `service_healthy`, else for the replica to run."""
        healthy = any(
            other.depends_on.get(service.name) == "service_healthy"
            for other in plan.services.values()
        )
        for replica in replicas_of(service):
            wrapped = self._running[replica].container.get_wrapped_container()

            def state(w: Any = wrapped) -> str:
                w.reload()
                health = (w.attrs.get("State") or {}).get("Health") or {}
                if service.healthcheck is None or not healthy:
                    return "healthy" if w.status == "running" else str(w.status)
                return str(health.get("Status", "starting"))

            deadline = time.monotonic() + self.timeout
            while (now := state()) != "healthy":
                if now in ("exited", "dead", "unhealthy") or time.monotonic() > deadline:
                    tail = wrapped.logs(tail=5).decode(errors="replace").strip()
                    raise TargetUnavailable(
                        f"containers target: {replica} of {plan.path.name} is {now}, not "
                        f"healthy (last lines: {tail[-400:]})"
                    )
                time.sleep(0.5)

    def _restore(
        self, plan: Compose, layout: _Layout, values: Mapping[str, str], backup: Path
    ) -> None:
        """The backup into the stores, before anything else starts (restore.py)."""
        assert self._dir is not None
        service = plan.services.get("backup")
        if service is None:
            raise TargetUnavailable(
                f"containers target: {plan.path.name} has no backup service, whose image "
                f"restores backup {backup.name}"
            )
        self.log(f"restoring backup {backup.name}")
        url_file = self._dir / "secrets" / "restore_database_url"
        url_file.write_text(
            f"postgresql://postgres:{values['postgres_password']}@postgres:5432/chatsdk"
            f"?sslmode=verify-full&sslrootcert={TLS_ROOT_IN_CONTAINERS}\n"
        )
        url_file.chmod(0o644)
        secrets = {
            str(layout.secret_files[name]): (f"/run/secrets/{name}", "ro")
            for name in service.secrets
        }
        self.restore_report = run_restore(
            self._client,
            backup=backup,
            image=layout.tags[service.image],
            networks=[layout.networks[name]._network for name in service.networks],
            environment=service.environment,
            url_file=url_file,
            mounts={**secrets, layout.volumes["uploads"]: ("/var/lib/chatsdk/uploads", "rw")},
            labels=self._labels(),
        )

    def _jobs(self) -> dict[str, Job]:
        """The system's jobs on request, run in the containers that hold them as the images'
        entrypoint runs commands (secrets from their files): a backup now and the check of one
        in the backup service's container, the retention job in an API container."""
        commands = {
            "backup": ("backup-1", "python3 -m chatsdk.backup run"),
            "verify": ("backup-1", "python3 -m chatsdk.backup verify"),
            "retention": ("api-1", "python -m chatsdk.retention"),
        }
        return {
            # By name: a rollout replaces a container under the same name.
            job: ShellJob(job, f"docker exec {self.run}-{replica} chatsdk-entrypoint {command}")
            for job, (replica, command) in commands.items()
            if replica in self._running
        }

    def _volume_path(self, plan: Compose, name: str) -> Path | None:
        """Where a named volume of the run lives on this machine (root reads it)."""
        if name not in plan.volumes:
            return None
        return Path(self._client.volumes.get(f"{self.run}-{name}").attrs["Mountpoint"])

    def _info(
        self,
        plan: Compose,
        edge_url: str,
        http_port: int,
        ca: Path,
        values: Mapping[str, str],
        *,
        edge_conf: Path,
        renewal: acme.AcmeRenewal | None,
    ) -> TargetInfo:
        assert self._dir is not None

        def published(replica: str, port: int) -> int:
            return int(self._running[replica].container.get_exposed_port(port))

        workers = {
            _control_name(plan.services[name], replica): (
                f"http://127.0.0.1:{published(replica, API_PORT)}"
            )
            for name in ("api", "realtime")
            if name in plan.services
            for replica in replicas_of(plan.services[name])
        }
        controls = {
            _control_name(r.service, r.name): ContainerControl(
                r.container.get_wrapped_container(),
                r.service.stop_grace_s or 10.0,
            )
            for r in self._running.values()
        }
        services = {
            _control_name(r.service, r.name): r.service.name for r in self._running.values()
        }
        engine = self._client.info()
        node = f"Docker engine {engine.get('Name')} (id {engine.get('ID')})"
        api = plan.services.get("api")
        assert self._layout is not None
        releases = None
        if api is not None:  # the rollout drills' deploys (releases.py)
            releases = ContainerReleases(
                workers=tuple(_control_name(api, replica) for replica in replicas_of(api)),
                client=self._client,
                image=self._layout.tags[api.image],
                controls=controls,
                replace=self._replace,
                candidate_dir=self._dir / "releases",
                log=self.log,
            )
        backups = self._volume_path(plan, "backups")
        uploads = self._volume_path(plan, "uploads")
        callback = self._gateway(plan, "api")
        edge = self._running[f"{EDGE_SERVICE}-1"].container.get_wrapped_container()
        edge_id = str(edge.id)
        clients = None
        if self._client_sources is not None:
            clients = client_net.client_network(
                edge, self._clients_network, self._client_sources, EDGE_HTTPS_PORT
            )
        containers = {
            name: r.container.get_wrapped_container() for name, r in self._running.items()
        }
        watching = monitoring.watch(
            containers,
            {
                replica: f"http://127.0.0.1:{published(replica, API_PORT)}/metrics"
                for name in ("api", "realtime")
                if name in plan.services
                for replica in replicas_of(plan.services[name])
            },
            worker_port=API_PORT,
            config=self._dir / "monitoring" / "prometheus.yml",
            catalogue=backups / "catalogue.json" if backups and "backup" in plan.services else None,
            timeout=self.timeout,
        )
        return TargetInfo(
            name="containers",
            kind="containers",
            edge=Edge(
                url=edge_url,
                http_url=f"http://127.0.0.1:{http_port}",
                ca_file=ca,
                clients=clients,
                config=lambda: _edge_config(edge_id, edge_conf),
                harness_certificate=renewal is None,  # minted by the run without an ACME client
                run_ca=renewal is not None,  # obtained by certbot from the run's pebble
                renewal=renewal,
            ),
            admin_key=values["admin_key"],
            jwt_secret=values.get("jwt_secret"),
            stores=Stores(
                # The primary's published port, verified against the run's own CA.
                postgres_dsn=f"postgresql://chatsdk:{values['postgres_app_password']}"
                f"@127.0.0.1:{published('postgres-1', 5432)}/chatsdk"
                + (
                    f"?sslmode=verify-full&sslrootcert={quote(str(self._dir / 'pki' / 'ca.pem'))}"
                    if "postgres_ca" in values
                    else ""
                ),
                redis_url=values["redis_url"].replace(
                    "@redis:6379", f"@127.0.0.1:{published('redis-1', 6379)}"
                ),
                upload_dir=uploads,
                network_addresses={"postgres": "postgres:5432", "redis": "redis:6379"},
            ),
            observability=Observability(
                metrics_urls=tuple(f"{url}/metrics" for url in workers.values()),
                log_files=(
                    *sorted((self._dir / "logs").glob("*.log")),
                    *sorted((self._dir / "edge" / "nginx" / "logs").glob("*.log")),
                ),
                prometheus_url=watching.prometheus_url,
                alertmanager_url=watching.alertmanager_url,
                network_addresses=watching.network_addresses,
                error_events=self._error_tracker.events if self._error_tracker else None,
                log_store=logstore.store(plan, partial(self._volume_path, plan)),
            ),
            backups=Backups(dir=backups, on_database_host=True, restore=self.restore),
            drills=Drills(
                control=controls,
                jobs=self._jobs(),
                releases=releases,
                worker_urls=workers,
                processes=lambda: {
                    name: pid for name, c in controls.items() if (pid := c.pid()) is not None
                },
                restarts=lambda: {name: c.restarts() for name, c in controls.items()},
                listeners=lambda: _published_bindings(
                    {name: r.container.get_wrapped_container() for name, r in self._running.items()}
                ),
                callback_host=callback,
                partitions=self._partitions(plan),
                cpu_limits=self._cpu_limits(plan),
                alert_routing=monitoring.drill_routing(
                    containers,
                    watching,
                    self._dir / "monitoring",
                    self._gateway(plan, monitoring.ALERTMANAGER),
                ),
                failover=self._failover(plan, controls),
            ),
            deployment=Deployment(
                placement=lambda: {
                    name: c.placement(services[name], node) for name, c in controls.items()
                },
                deployed_at=self._deployed_at,
                runs_without={
                    "grafana": "the compose deployment runs no Grafana: Debian does not package "
                    "it and no registry answers here; point grafana_url of a target file at the "
                    "deployment's Grafana to decide this item",
                },
            ),
        )

    def _cpu_limits(self, plan: Compose) -> ContainerCpuLimits:
        """The scaling step's hands on every container the edge sends /v1 to (OVERRIDES)."""
        upstreams = _edge_upstreams(plan)
        return ContainerCpuLimits(
            containers={
                _control_name(service, replica): f"{self.run}-{replica}"
                for service, replica in upstreams
            },
            own={
                _control_name(service, replica): service.nano_cpus for service, replica in upstreams
            },
            host_cpus=int(self._client.info().get("NCPU") or 1),
        )

    def _gateway(self, plan: Compose, service: str) -> str | None:
        """This machine's address on the first network of `service` that is not internal,
        where its containers reach a listener here (None: it joins internal networks only)."""
        networks = plan.services[service].networks if service in plan.services else ()
        return next(
            (
                address
                for name in networks
                if (address := client_net.gateway(self._networks_made[name]._network))
            ),
            None,
        )

    def _failover(
        self, plan: Compose, controls: Mapping[str, ContainerControl]
    ) -> ContainersFailover | None:
        """The failover drill's hands (failover.py), where the file runs a standby on a network
        it shares with its primary."""
        if PRIMARY not in plan.services or STANDBY not in plan.services:
            return None
        shared = [
            n for n in plan.services[PRIMARY].networks if n in plan.services[STANDBY].networks
        ]
        if not shared:
            return None
        return ContainersFailover(
            client=self._client,
            primary=controls[PRIMARY],
            standby=controls[STANDBY],
            network=self._networks_made[shared[0]]._network.name,
            labels=self._labels(),
            log=self.log,
        )

    def _partitions(self, plan: Compose) -> NetworkCut:
        """The partition drills' hands: each store's own network, and the API containers."""
        return NetworkCut(
            networks={
                store: self._networks_made[network]._network
                for store, network in store_networks(plan).items()
            },
            members=[
                Member(r.container.get_wrapped_container(), (r.name, r.service.name))
                for r in self._running.values()
                if r.service.name in API_SERVICES
            ],
        )


def _remove(container: Any) -> None:
    """Remove a container of the run on exit; one a rollout replaced is gone already."""
    import docker.errors  # noqa: PLC0415 - the docker SDK only where an engine is used

    with contextlib.suppress(docker.errors.NotFound):
        container.stop()


def _write_secrets(
    folder: Path, plan: Compose, pki: Pki | None = None, *, with_standby: bool = True
) -> tuple[dict[str, Path], dict[str, str]]:
    """One file per compose secret, as system/deploy/secrets/README.md makes them: random hex
    passwords, the URLs built from them, and PostgreSQL's TLS files from the run's `pki`.
    Readable inside the containers (their users are not root), in a folder only root can
    enter. `with_standby=False` leaves the standby out of the API's database URL (a test's
    broken deployment)."""
    folder.mkdir(mode=0o700)
    values = {name: secrets_module.token_hex(32) for name in plan.secrets}
    if pki is not None:
        tls = {
            "postgres_tls_cert": pki.server_chain,
            "postgres_tls_key": pki.server_key,
            "postgres_ca": pki.ca_cert,
        }
        values.update({k: path.read_text().strip() for k, path in tls.items() if k in values})
    # The primary and, where the file runs one, its standby (whichever accepts writes), each
    # verified against the deployment's CA where the file gives one.
    standby = with_standby and STANDBY in plan.services
    hosts = "postgres:5432,postgres-standby:5432" if standby else "postgres:5432"
    query = [
        *(["target_session_attrs=read-write"] if standby else []),
        *(
            ["sslmode=verify-full", f"sslrootcert={TLS_ROOT_IN_CONTAINERS}"]
            if "postgres_ca" in values
            else []
        ),
    ]
    backup_query = [q for q in query if not q.startswith("target_session_attrs")]
    urls = {
        "database_url": f"postgresql://chatsdk:{values.get('postgres_app_password')}"
        f"@{hosts}/chatsdk" + (f"?{'&'.join(query)}" if query else ""),
        "backup_database_url": f"postgresql://chatsdk_backup:"
        f"{values.get('postgres_backup_password')}@postgres:5432/chatsdk"
        + (f"?{'&'.join(backup_query)}" if backup_query else ""),
        "redis_url": f"redis://:{values.get('redis_password')}@redis:6379/0",
    }
    values.update({k: v for k, v in urls.items() if k in values})
    files = {}
    for name, value in values.items():
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o644)
        files[name] = path
    return files, values


def _published_bindings(containers: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(container, host address, host port) of every port the engine publishes for them."""
    found = []
    for name, container in sorted(containers.items()):
        container.reload()
        for bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).values():
            for binding in bindings or ():
                address = binding.get("HostIp") or "0.0.0.0"  # noqa: S104 - the engine's default
                found.append((name, address, int(binding["HostPort"])))
    return found


def _edge_config(container_id: str, conf: Path) -> str:
    """`nginx -T` in the edge's container, for the file it was started with."""
    argv = ["nginx", "-T", "-q", "-p", str(conf.parent), "-c", str(conf)]
    done = subprocess.run(
        ["docker", "exec", container_id, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise TargetUnavailable(
            f"containers target: `{' '.join(argv)}` in the edge's container exited "
            f"{done.returncode}: {done.stderr.strip()[-400:]}"
        )
    return done.stdout


def _reloading(container_id: str) -> bool:
    """Whether NGINX in the edge's container still has workers of an older configuration (their
    title says "shutting down" until they exit), or cannot be asked."""
    listing = subprocess.run(  # a process may end between the glob and its read: no matter
        ["docker", "exec", container_id, "sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null; :"],
        capture_output=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    ).stdout
    return b"nginx: master" not in listing or b"shutting down" in listing


def _ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
