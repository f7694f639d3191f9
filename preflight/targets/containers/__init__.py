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
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.polling import until
from preflight.targets.base import (
    Backups,
    Deployment,
    Drills,
    Edge,
    Observability,
    Stores,
    TargetDescription,
    TargetInfo,
    TargetKind,
    Unsupervised,
)
from preflight.targets.containers import compose as compose_file
from preflight.targets.containers.compose import Compose, Service, replicas_of
from preflight.targets.containers.control import ContainerControl
from preflight.targets.containers.engine import (
    LAUNCHER_LABEL,
    RUN_LABEL,
    configure_testcontainers,
    docker_available,
    engine,
    launcher,
    sweep,
)
from preflight.targets.containers.images import IMAGES, build_all
from preflight.targets.describe import describe_running
from preflight.targets.edge import EdgeConfig, render_edge
from preflight.targets.pki import make_pki
from preflight.targets.procs import free_port

__all__ = ["OVERRIDES", "ContainersTarget", "docker_available"]

EDGE_SERVICE = "nginx"
EDGE_HTTPS_PORT = 8443
EDGE_HTTP_PORT = 8080
API_PORT = 8080
STORES = ("postgres", "redis")
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
    "CHATSDK_ALLOWED_ORIGINS": "the edge's own https://127.0.0.1:<port> origin, where the "
    "browser journeys open the web client, instead of https://chat.example.com",
    "./edge": "the edge configuration rendered from system/nginx for this run's certificate "
    "(minted by the run) and the API containers' names; NGINX reads it where the run wrote it "
    "(the run's folder mounted at the same path, `nginx -p <folder> -c <file>`) instead of at "
    "/etc/nginx, and writes its access and error logs there for the log probes",
    "secret files": "fresh random values, written to a private folder of the run",
    "CHATSDK_DEMO": "1 on the API containers, as on a staging deployment: the browser journeys "
    "sign in through the demo endpoint",
}


@dataclass(frozen=True)
class _Layout:
    """What the run made for the services to use."""

    tags: Mapping[str, str]  # compose image name -> the tag built here
    networks: Mapping[str, Any]  # compose network -> testcontainers Network
    volumes: Mapping[str, str]  # compose volume -> the engine's volume name
    secret_files: Mapping[str, Path]
    edge_conf: Path
    edge_url: str
    edge_ports: Mapping[int, int]  # the edge's container port -> its port on 127.0.0.1


def _control_name(service: Service, replica: str) -> str:
    """The drills' name for a container: the service's, or the replica's where there are
    several (api-1, api-2), as the native target names its workers."""
    return replica if service.replicas > 1 else service.name


def _published(service: Service, layout: _Layout) -> dict[int, int]:
    """Container port -> port on 127.0.0.1 (OVERRIDES: published ports)."""
    if service.name == EDGE_SERVICE:
        return dict(layout.edge_ports)
    inside = {"postgres": 5432, "redis": 6379, "api": API_PORT, "realtime": API_PORT}
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
    ) -> None:
        self.log = log
        self.timeout = timeout
        self.compose_path = compose_path
        self.run = f"preflight-{secrets_module.token_hex(4)}"
        self.info: TargetInfo | None = None
        self._client: Any = None
        self._stack = contextlib.ExitStack()
        self._dir: Path | None = None
        self._running: dict[str, _Running] = {}
        self._tc_clients: list[Any] = []  # testcontainers' own engine clients, closed on exit
        self._log_followers: list[subprocess.Popen[bytes]] = []

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
        with contextlib.suppress(Exception):
            self._stack.close()  # removes the containers: their log followers end
        for follower in self._log_followers:
            follower.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                follower.wait(timeout=5)
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        self._log_followers.clear()
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
        plan = compose_file.load(self.compose_path)
        self._dir = Path(tempfile.mkdtemp(prefix="preflight-containers-"))
        self._dir.chmod(0o711)  # NGINX workers (nobody) reach the web client; secrets/ is 0700
        secret_files, values = _write_secrets(self._dir / "secrets", plan)
        https_port, http_port = free_port(), free_port()
        edge_url = f"https://127.0.0.1:{https_port}"
        layout = _Layout(
            tags=self._images(plan),
            networks=self._networks(plan),
            volumes=self._volumes(plan),
            secret_files=secret_files,
            edge_conf=self._render_edge(plan),
            edge_url=edge_url,
            edge_ports={EDGE_HTTPS_PORT: https_port, EDGE_HTTP_PORT: http_port},
        )
        for wave in plan.waves():
            for name in wave:
                for replica in replicas_of(plan.services[name]):
                    self._start_container(plan.services[name], replica, layout)
            for name in wave:
                self._wait_ready(plan, plan.services[name])
        ca = self._dir / "pki" / "ca.pem"
        context = ssl.create_default_context(cafile=str(ca))
        if not until(lambda: _ok(f"{edge_url}/v1/health/ready", context), self.timeout):
            edge = self._running[f"{EDGE_SERVICE}-1"].container.get_wrapped_container()
            tail = edge.logs(tail=5).decode(errors="replace").strip()
            raise TargetUnavailable(
                f"containers target: the edge at {edge_url} is not ready within "
                f"{self.timeout:.0f} s (its last lines: {tail[-400:]})"
            )
        return self._info(plan, edge_url, http_port, ca, values)

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

    def _networks(self, plan: Compose) -> dict[str, Any]:
        from testcontainers.core.network import Network  # noqa: PLC0415

        made = {}
        for name, internal in {**plan.networks, HOST_NETWORK: False}.items():
            network = Network(
                docker_network_kw={"internal": internal, "labels": self._labels()},
            )
            network.name = f"{self.run}-{name}"
            self._tc_clients.append(network._docker)
            made[name] = self._stack.enter_context(network)
        return made

    def _volumes(self, plan: Compose) -> dict[str, str]:
        made = {}
        for name in plan.volumes:
            volume = self._client.volumes.create(name=f"{self.run}-{name}", labels=self._labels())
            made[name] = volume.name
        return made

    def _render_edge(self, plan: Compose) -> Path:
        """nginx.conf for this run (its absolute paths are under the run's folder)."""
        assert self._dir is not None
        pki = make_pki(self._dir / "pki", hostnames=("localhost", EDGE_SERVICE))
        upstreams = [
            (replica, API_PORT)
            for service in plan.services.values()
            if service.name in {"api", "realtime"}
            for replica in replicas_of(service)
        ]
        # The edge reads its certificate where the container mounts the run's folder.
        conf = render_edge(
            EdgeConfig(
                workdir=self._dir / "edge",
                https_port=EDGE_HTTPS_PORT,
                http_port=EDGE_HTTP_PORT,
                upstreams=upstreams,
                pki=pki,
                listen_address="0.0.0.0",  # noqa: S104 - inside its own network namespace
            )
        )
        return conf

    def _start_container(self, service: Service, replica: str, layout: _Layout) -> None:
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415

        joins = list(service.networks)
        if service.name in STORES:
            joins.insert(0, HOST_NETWORK)  # OVERRIDES: stores published
        first, *others = [layout.networks[n] for n in joins]
        c = DockerContainer(
            layout.tags[service.image],
            name=f"{self.run}-{replica}",
            network=first,
            network_aliases=[replica, service.name],
            **self._engine_options(service, replica),
        )
        c.tmpfs = {path: "" for path in service.tmpfs}
        env = dict(service.environment)
        if "CHATSDK_ALLOWED_ORIGINS" in env:  # the API's containers (OVERRIDES)
            env["CHATSDK_ALLOWED_ORIGINS"] = layout.edge_url
            env["CHATSDK_DEMO"] = "1"
        for key, value in env.items():
            c.with_env(key, value)
        command = list(service.command or ())
        if service.name == EDGE_SERVICE:  # OVERRIDES: ./edge
            conf = layout.edge_conf
            command = ["nginx", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)]
            c.with_volume_mapping(str(self._dir), str(self._dir), "rw")
        if command:
            c.with_command(command)
        for secret in service.secrets:
            c.with_volume_mapping(str(layout.secret_files[secret]), f"/run/secrets/{secret}", "ro")
        for source, target, mode in self._mounts(service, layout):
            c.with_volume_mapping(source, target, mode)
        for inside, outside in _published(service, layout).items():
            c.ports[inside] = ("127.0.0.1", outside)  # type: ignore[index,assignment]
        self._tc_clients.append(c.get_docker_client())
        self.log(f"starting {replica} ({layout.tags[service.image]})")
        started = self._stack.enter_context(c)
        for network in others:
            network._network.connect(
                started.get_wrapped_container(), aliases=[replica, service.name]
            )
        self._running[replica] = _Running(service, replica, started)
        self._follow_logs(replica, started)

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
            else:
                source = str((self.compose_path.parent / mount.source).resolve())
            mounts.append((source, mount.target, "ro" if mount.read_only else "rw"))
        return mounts

    def _follow_logs(self, replica: str, container: Any) -> None:
        """Copy the container's output into <run>/logs/<replica>.log for the log probes."""
        assert self._dir is not None
        path = self._dir / "logs" / f"{replica}.log"
        path.parent.mkdir(exist_ok=True)

        # The docker CLI follows the output in a process of its own: no engine connection of
        # this process stays open behind a thread (docker-py's log streams leak their sockets).
        with path.open("ab") as out:
            follower = subprocess.Popen(
                ["docker", "logs", "--follow", str(container.get_wrapped_container().id)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._log_followers.append(follower)

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

    def _volume_path(self, plan: Compose, name: str) -> Path | None:
        """Where a named volume of the run lives on this machine (root reads it)."""
        if name not in plan.volumes:
            return None
        return Path(self._client.volumes.get(f"{self.run}-{name}").attrs["Mountpoint"])

    def _info(
        self, plan: Compose, edge_url: str, http_port: int, ca: Path, values: Mapping[str, str]
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
                has_healthcheck=r.service.healthcheck is not None,
            )
            for r in self._running.values()
        }
        backups = self._volume_path(plan, "backups")
        uploads = self._volume_path(plan, "uploads")
        return TargetInfo(
            name="containers",
            kind="containers",
            edge=Edge(url=edge_url, http_url=f"http://127.0.0.1:{http_port}", ca_file=ca),
            admin_key=values["admin_key"],
            jwt_secret=values.get("jwt_secret"),
            stores=Stores(
                postgres_dsn=f"postgresql://chatsdk:{values['postgres_app_password']}"
                f"@127.0.0.1:{published('postgres-1', 5432)}/chatsdk",
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
            ),
            backups=Backups(
                dir=backups,
                on_database_host=True,
            ),
            drills=Drills(
                control=controls,
                worker_urls=workers,
                processes=lambda: {
                    name: pid for name, c in controls.items() if (pid := c.pid()) is not None
                },
                restarts=lambda: {name: c.restarts() for name, c in controls.items()},
            ),
            deployment=Deployment(
                deployed_at=time.time(),
                runs_without={
                    "grafana": "the compose deployment runs no Grafana: Debian does not package "
                    "it and no registry answers here; point grafana_url of a target file at the "
                    "deployment's Grafana to decide this item",
                },
            ),
        )


def _write_secrets(folder: Path, plan: Compose) -> tuple[dict[str, Path], dict[str, str]]:
    """One file per compose secret, as system/deploy/secrets/README.md makes them: random hex
    passwords, and the URLs built from them. Readable inside the containers (their users are
    not root), in a folder only root can enter."""
    folder.mkdir(mode=0o700)
    values = {name: secrets_module.token_hex(32) for name in plan.secrets}
    # The primary and, where the file runs one, its standby (whichever accepts writes).
    standby = "postgres-standby" in plan.services
    hosts = "postgres:5432,postgres-standby:5432" if standby else "postgres:5432"
    urls = {
        "database_url": f"postgresql://chatsdk:{values.get('postgres_app_password')}"
        f"@{hosts}/chatsdk" + ("?target_session_attrs=read-write" if standby else ""),
        "backup_database_url": f"postgresql://chatsdk_backup:"
        f"{values.get('postgres_backup_password')}@postgres:5432/chatsdk",
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


def _ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
