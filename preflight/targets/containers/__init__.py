"""The containers target: the same stack as the native one, as containers via testcontainers.

The wiring is a plain-data plan (`plan_containers`) so it can be checked without an engine;
`ContainersTarget` realises the plan with testcontainers where a Docker engine answers."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.polling import until
from preflight.targets.base import (
    Edge,
    Stores,
    TargetDescription,
    TargetInfo,
    TargetKind,
    Unsupervised,
)
from preflight.targets.describe import describe_running
from preflight.targets.edge import EdgeConfig, render_edge
from preflight.targets.pki import make_pki
from preflight.targets.servers import APP_ROLE_SQL, postgres_args
from preflight.targets.servers import redis_conf as redis_conf_text

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "system/deploy/Dockerfile"
POSTGRES_IMAGE = "postgres:15"
REDIS_IMAGE = "redis:7.0"
NGINX_IMAGE = "nginx:1.22"  # the same major as the native edge, so one template serves both
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
UPLOAD_BUCKET = "chatsdk-uploads"
ROLE_SQL_PATH = "/docker-entrypoint-preflight/app-role.sql"
API_PORT = 8080
EDGE_HTTPS_PORT = 8443
EDGE_HTTP_PORT = 8080


def docker_available(timeout: float = 2.0) -> str | None:
    """None when a Docker engine answers, else the reason it does not."""
    import docker  # noqa: PLC0415 - imported only when a target is being chosen

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host[len("unix://") :]).is_socket():
        # docker-py leaks the socket of a failed unix connect; with no socket file there is
        # nothing to ask, and this is the answer on machines without an engine.
        return f"no Docker engine answers (no socket at {host[len('unix://') :]})"

    # A fixed API version keeps from_env() from talking to the engine at construction, where a
    # failure would leave the client's socket open; the ping below is the one real question.
    client = docker.from_env(version="1.41", timeout=int(max(timeout, 1)))
    try:
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests errors, OSError...
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:160]})"
    finally:
        client.close()
    return None


@dataclass(frozen=True)
class ContainerSpec:
    """One container of the plan: what testcontainers is asked to run."""

    name: str
    image: str
    aliases: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    exposed_ports: tuple[int, ...] = ()
    volumes: tuple[tuple[str, str, str], ...] = ()  # (host path, container path, mode)


@dataclass(frozen=True)
class ContainersPlan:
    postgres: ContainerSpec
    redis: ContainerSpec
    minio: ContainerSpec
    api: tuple[ContainerSpec, ...]
    edge: ContainerSpec
    app_password: str = field(repr=False)
    admin_key: str = field(repr=False)
    dsn_template: str = field(repr=False)  # host and port filled in once PostgreSQL is mapped
    redis_url_template: str = field(repr=False)


def plan_containers(workdir: Path, workers: int = 2) -> ContainersPlan:
    """Build the wiring: an internal network with aliases, secrets in the environment only,
    the edge config rendered by the same templates as the native target and mounted read-only."""
    pg_password, app_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    redis_password, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    jwt_secret = secrets.token_urlsafe(48)
    minio_user, minio_password = "chatsdk", secrets.token_urlsafe(24)

    role_sql = workdir / "app-role.sql"
    role_sql.write_text(APP_ROLE_SQL)
    postgres = ContainerSpec(
        name="postgres",
        image=POSTGRES_IMAGE,
        aliases=("postgres",),
        env={
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": pg_password,
            "POSTGRES_DB": "postgres",
            "POSTGRES_INITDB_ARGS": "--data-checksums --auth-host=scram-sha-256",
            "POSTGRES_HOST_AUTH_METHOD": "scram-sha-256",
        },
        command=("postgres", *postgres_args()),
        # The same role and database SQL as the native target, run with psql -f.
        volumes=((str(role_sql), ROLE_SQL_PATH, "ro"),),
        exposed_ports=(5432,),
    )
    redis_conf = workdir / "redis.conf"
    redis_conf.write_text(redis_conf_text(redis_password))
    redis_spec = ContainerSpec(
        name="redis",
        image=REDIS_IMAGE,
        aliases=("redis",),
        command=("redis-server", "/usr/local/etc/redis/redis.conf"),
        exposed_ports=(6379,),
        volumes=((str(redis_conf), "/usr/local/etc/redis/redis.conf", "ro"),),
    )
    # Uploads go to S3-compatible storage here, as in production (the native target uses disk).
    minio = ContainerSpec(
        name="minio",
        image=MINIO_IMAGE,
        aliases=("minio",),
        env={"MINIO_ROOT_USER": minio_user, "MINIO_ROOT_PASSWORD": minio_password},
        command=("server", "/data"),
        exposed_ports=(9000,),
    )
    dsn_in_network = f"postgresql://chatsdk:{app_password}@postgres:5432/chatsdk"
    redis_in_network = f"redis://:{redis_password}@redis:6379/0"
    api = tuple(
        ContainerSpec(
            name=f"api-{i}",
            image="preflight-chatsdk:local",
            aliases=(f"api-{i}",),
            env={
                "CHATSDK_HOST": "0.0.0.0",  # noqa: S104 - inside its own network namespace
                "CHATSDK_PORT": str(API_PORT),
                "CHATSDK_WORKER_ID": str(i),
                "CHATSDK_DATABASE_URL": dsn_in_network,
                "CHATSDK_REDIS_URL": redis_in_network,
                "CHATSDK_ADMIN_KEY": admin_key,
                "CHATSDK_JWT_SECRET": jwt_secret,
                "CHATSDK_UPLOAD_DIR": "/var/lib/chatsdk/uploads",
                "CHATSDK_STORAGE": "s3",
                "CHATSDK_S3_ENDPOINT": "http://minio:9000",
                "CHATSDK_S3_BUCKET": UPLOAD_BUCKET,
                "CHATSDK_S3_REGION": "us-east-1",
                "CHATSDK_S3_ACCESS_KEY": minio_user,
                "CHATSDK_S3_SECRET_KEY": minio_password,
            },
            exposed_ports=(API_PORT,),
        )
        for i in range(workers)
    )
    pki = make_pki(workdir / "pki", hostnames=("localhost", "edge"))
    conf = render_edge(
        EdgeConfig(
            workdir=workdir / "edge",
            https_port=EDGE_HTTPS_PORT,
            http_port=EDGE_HTTP_PORT,
            upstreams=[(spec.aliases[0], API_PORT) for spec in api],
            pki=pki,
            listen_address="0.0.0.0",  # noqa: S104 - inside its own network namespace
        )
    )
    # The rendered config names absolute paths under workdir; mounting workdir at the same path
    # inside the container keeps them true there.
    edge = ContainerSpec(
        name="edge",
        image=NGINX_IMAGE,
        aliases=("edge",),
        command=("nginx", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)),
        exposed_ports=(EDGE_HTTPS_PORT, EDGE_HTTP_PORT),
        volumes=((str(workdir), str(workdir), "rw"),),
    )
    return ContainersPlan(
        postgres=postgres,
        redis=redis_spec,
        minio=minio,
        api=api,
        edge=edge,
        app_password=app_password,
        admin_key=admin_key,
        dsn_template=f"postgresql://chatsdk:{app_password}@{{host}}:{{port}}/chatsdk",
        redis_url_template=f"redis://:{redis_password}@{{host}}:{{port}}/0",
    )


class ContainersTarget(Unsupervised):
    """`with ContainersTarget() as info:` runs the plan on a Docker engine via testcontainers."""

    kind: TargetKind = "containers"

    def __init__(
        self, workers: int = 2, log: Callable[[str], None] = lambda _m: None, timeout: float = 300
    ) -> None:
        self.workers = workers
        self.log = log
        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        self._dir: Path | None = None
        self.info: TargetInfo | None = None

    def __enter__(self) -> TargetInfo:
        reason = docker_available()
        if reason is not None:
            raise TargetUnavailable(
                f"containers target: {reason}; start Docker (or point DOCKER_HOST at an engine), "
                "or use `--target native`"
            )
        try:
            self.info = self._start()
        except BaseException:
            self.__exit__()
            raise
        return self.info

    def __exit__(self, *exc: object) -> None:
        self.info = None
        self._stack.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def describe(self) -> TargetDescription:
        """Versions where the mapped ports reach PostgreSQL and Redis; the containers' files are
        not digested."""
        return describe_running(self.info)

    def _start(self) -> TargetInfo:
        # Imported here: testcontainers talks to the engine at construction time.
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415
        from testcontainers.core.image import DockerImage  # noqa: PLC0415
        from testcontainers.core.network import Network  # noqa: PLC0415

        self._dir = Path(tempfile.mkdtemp(prefix="preflight-containers-"))
        self._dir.chmod(0o711)
        plan = plan_containers(self._dir, self.workers)
        network = self._stack.enter_context(Network())

        def run(spec: ContainerSpec, image: str | None = None) -> Any:
            c = DockerContainer(image or spec.image).with_network(network)
            c = c.with_network_aliases(*spec.aliases).with_exposed_ports(*spec.exposed_ports)
            for k, v in spec.env.items():
                c = c.with_env(k, v)
            for host, inside, mode in spec.volumes:
                c = c.with_volume_mapping(host, inside, mode)
            if spec.command:
                c = c.with_command(list(spec.command))
            self.log(f"starting container {spec.name} ({image or spec.image})")
            return self._stack.enter_context(c)

        pg = run(plan.postgres)
        _wait(lambda: pg.exec(["pg_isready", "-U", "postgres"]).exit_code == 0, self.timeout, "pg")
        result = pg.exec(
            [
                "psql",
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"pw={plan.app_password}",
                "-f",
                ROLE_SQL_PATH,
            ]
        )
        if result.exit_code != 0:
            raise TargetUnavailable(f"containers target: creating the app role failed: {result}")
        rd = run(plan.redis)
        run(plan.minio)
        self.log(f"building the API image from {DOCKERFILE}")
        image = self._stack.enter_context(
            DockerImage(path=REPO_ROOT, dockerfile_path=DOCKERFILE, tag="preflight-chatsdk:local")
        )
        for spec in plan.api:
            run(spec, str(image))
        edge = run(plan.edge)
        host = edge.get_container_host_ip()
        edge_url = f"https://{host}:{edge.get_exposed_port(EDGE_HTTPS_PORT)}"
        ca = ssl.create_default_context(cafile=str(self._dir / "pki" / "ca.pem"))
        _wait(lambda: _ok(f"{edge_url}/v1/health/ready", ca), self.timeout, "edge")
        return TargetInfo(
            name="containers",
            kind="containers",
            edge=Edge(
                url=edge_url,
                http_url=f"http://{host}:{edge.get_exposed_port(EDGE_HTTP_PORT)}",
                ca_file=self._dir / "pki" / "ca.pem",
            ),
            admin_key=plan.admin_key,
            stores=Stores(
                postgres_dsn=plan.dsn_template.format(
                    host=pg.get_container_host_ip(), port=pg.get_exposed_port(5432)
                ),
                redis_url=plan.redis_url_template.format(
                    host=rd.get_container_host_ip(), port=rd.get_exposed_port(6379)
                ),
            ),
        )


def _ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
    if not until(ready, timeout, interval=0.5):
        raise TargetUnavailable(f"containers target: {what} not ready within {timeout:.0f} s")
