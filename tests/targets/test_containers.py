"""The containers target: selection, the compose file as the target reads it, the image inputs,
and one end-to-end run of system/deploy on this machine's Docker engine (set-up starts one)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from preflight.client import ChatClient, expect
from preflight.errors import TargetUnavailable
from preflight.probe.target import ProbeTarget
from preflight.targets import choose_target
from preflight.targets.base import TargetInfo
from preflight.targets.containers import ContainersTarget, _write_secrets
from preflight.targets.containers.compose import ComposeInvalid, load, seconds
from preflight.targets.containers.engine import RUN_LABEL, docker_available, engine
from preflight.targets.containers.images import IMAGES, REPO_ROOT, Image, _files_digest
from preflight.targets.containers.partition import store_networks
from preflight.targets.pki import make_pki

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

COMPOSE = REPO_ROOT / "system" / "deploy" / "docker-compose.yml"


def no_engine() -> str | None:
    return "no Docker engine answers (test)"


def an_engine() -> str | None:
    return None


def test_auto_is_containers_where_an_engine_answers_and_containers_needs_one() -> None:
    chosen = choose_target("auto", an_engine)
    assert chosen.kind == "containers"
    assert "Docker engine answers" in chosen.reason
    fallback = choose_target("auto", no_engine)
    assert fallback.kind == "native"
    assert fallback.reason.startswith("no Docker engine answers (test), so")
    assert choose_target("containers", an_engine).kind == "containers"
    with pytest.raises(TargetUnavailable, match="no Docker engine"):
        choose_target("containers", no_engine)


# -- the compose file as the target reads it -----------------------------------------------------


def test_the_shipped_compose_file_starts_stores_before_the_api_and_the_edge_last() -> None:
    plan = load(COMPOSE)
    order = plan.start_order()
    assert order.index("postgres") < order.index("api")
    assert order.index("redis") < order.index("api")
    assert order.index("api") < order.index("nginx")
    assert plan.waves() == [  # the edge, and the backup of the schema the API made, last
        [
            "postgres",
            "redis",
            "certbot",
            "prometheus",
            "alertmanager",
            "node-exporter",
            "container-exporter",
        ],
        ["api", "realtime", "postgres-standby", "postgres-exporter", "redis-exporter"],
        ["backup", "nginx"],
    ]
    assert plan.networks["backend"] is True, "the stores' network is internal"
    for service in plan.services.values():
        assert service.dockerfile is not None, f"{service.name} builds its image here"
        assert service.restart == "unless-stopped", service.name
        assert service.healthcheck is not None, service.name
        assert service.mem_limit, service.name
        assert service.nano_cpus, service.name


def test_each_store_has_a_network_of_its_own_to_cut_the_api_off(tmp_path: Path) -> None:
    """The partition drills cut the API containers off one store by its network: PostgreSQL's
    and Redis's must be apart, or cutting one would cut both."""
    assert store_networks(load(COMPOSE)) == {"postgres": "backend", "redis": "cache"}
    shared = tmp_path / "docker-compose.yml"
    shared.write_text(
        "services:\n"
        "  api: {image: a:1, networks: [edge, backend]}\n"
        "  postgres: {image: p:1, networks: [backend]}\n"
        "  redis: {image: r:1, networks: [backend]}\n"
        "networks: {edge: {}, backend: {internal: true}}\n"
    )
    assert store_networks(load(shared)) == {}


def test_the_api_replicas_share_one_configuration_without_a_worker_id() -> None:
    """Each replica takes its host name as its worker id (chatsdk/settings.py): an id in the
    shared environment would make every replica report the same."""
    plan = load(COMPOSE)
    for name in ("api", "realtime"):
        assert "CHATSDK_WORKER_ID" not in plan.services[name].environment, name


def test_compose_values_become_the_engine_apis(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(
        "services:\n"
        "  one:\n"
        "    image: x:1.0.0\n"
        "    command: [sh, -c, 'echo $$HOME']\n"
        "    healthcheck: {test: 'true', interval: 1m30s, timeout: 500ms, retries: 2}\n"
        "    deploy: {replicas: 3, resources: {limits: {cpus: '0.5', memory: 256M}}}\n"
        "    networks: [n]\n"
        "networks: {n: {internal: true}}\n"
    )
    one = load(path).services["one"]
    assert one.command == ("sh", "-c", "echo $HOME")
    assert one.healthcheck == {
        "test": ["CMD-SHELL", "true"],
        "interval": 90 * 10**9,
        "timeout": 5 * 10**8,
        "retries": 2,
    }
    assert one.replicas == 3
    assert one.nano_cpus == 5 * 10**8
    assert one.mem_limit == 256 * 2**20
    assert seconds("1h2m3s") == 3723


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("    image: x:1\n    command: ['echo ${HOME}']\n", "interpolates a variable"),
        ("    image: x:1\n    networks: [nowhere]\n", "joins undefined nowhere"),
        ("    image: x:1\n    depends_on: [ghost]\n", "depends on ghost, which is not defined"),
        ("    command: [true]\n", "`image` must name the image"),
    ],
)
def test_a_compose_file_the_target_cannot_run_is_named(
    tmp_path: Path, service: str, message: str
) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text("services:\n  one:\n" + service)
    with pytest.raises(ComposeInvalid, match=re.escape(message)):
        load(path).start_order()


def test_secrets_are_random_and_the_urls_use_them(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", hostnames=("localhost", "postgres"))
    files, values = _write_secrets(tmp_path / "s", load(COMPOSE), pki)
    assert set(files) == set(load(COMPOSE).secrets)
    assert values["postgres_app_password"] in values["database_url"]
    assert values["postgres_backup_password"] in values["backup_database_url"]
    assert values["redis_password"] in values["redis_url"]
    for url in ("database_url", "backup_database_url"):
        assert "sslmode=verify-full&sslrootcert=/run/secrets/postgres_ca" in values[url]
    assert "@postgres:5432,postgres-standby:5432/" in values["database_url"]
    assert "target_session_attrs=read-write" in values["database_url"]
    assert files["postgres_tls_key"].read_text().strip() == pki.server_key.read_text().strip()
    assert files["postgres_ca"].read_text().strip() == pki.ca_cert.read_text().strip()
    assert len(set(values.values())) == len(values)
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700


def test_a_primary_only_database_url_leaves_the_standby_out(tmp_path: Path) -> None:
    """The failover drill's broken deployment (tests/drills/test_failover_containers.py)."""
    _, values = _write_secrets(tmp_path / "s", load(COMPOSE), with_standby=False)
    assert "@postgres:5432/chatsdk" in values["database_url"]
    assert "postgres-standby" not in values["database_url"]
    assert "target_session_attrs" not in values["database_url"]


# -- the images -----------------------------------------------------------------------------------


def _copy_sources(image: Image) -> list[str]:
    text = re.sub(r"\\\n", " ", (REPO_ROOT / image.dockerfile).read_text())
    sources = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_an_images_tag_covers_every_file_it_copies(image: Image) -> None:
    """The tag is a digest of the inputs: a COPY source missing from them would let a changed
    file reuse a stale image."""
    inputs = (image.dockerfile, *image.inputs)
    for source in _copy_sources(image):
        if source == "system/deploy/wheels":
            continue  # the wheels are the hashed requirements.txt's, which is an input
        assert any(source == i or source.startswith(i.rstrip("/") + "/") for i in inputs), (
            f"{image.dockerfile} copies {source}, which its tag's digest does not cover"
        )


def test_a_changed_input_changes_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("preflight.targets.containers.images.REPO_ROOT", tmp_path)
    (tmp_path / "f").write_text("a")
    before = _files_digest("f")
    (tmp_path / "f").write_text("b")
    assert _files_digest("f") != before


def test_without_an_engine_entering_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(TargetUnavailable, match=r"no Docker engine answers.*--target native"):
        ContainersTarget().__enter__()


# -- end to end -----------------------------------------------------------------------------------


def test_the_shipped_deployment_runs_and_leaves_nothing_behind() -> None:
    """system/deploy on this machine's engine: the edge answers over TLS with its headers, a
    message goes through the API containers, the standby streams from the primary, an API
    container whose process is killed with
    SIGKILL is brought back by the engine's restart policy (and counted), a Redis stopped on
    purpose stays down until started (readiness says so meanwhile), the backup service takes its
    first backup, and leaving removes every container, network and volume of the run."""
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    lines: list[str] = []
    target = ContainersTarget(log=lines.append, timeout=600)
    with target as info:
        assert info.edge.ca_file is not None
        assert info.edge.url.startswith("https://localhost:")  # the name its certificate is for
        ctx = ssl.create_default_context(cafile=str(info.edge.ca_file))
        with urllib.request.urlopen(f"{info.edge.url}/v1/health/ready", context=ctx) as resp:  # noqa: S310
            assert resp.status == 200
            assert resp.headers["Strict-Transport-Security"]
        chat = ChatClient.for_target(info)
        app = expect(chat.as_admin(info.admin_key).post("/v1/apps", {"name": "e2e"}), 201)
        backend = chat.as_app(app["api_key"])
        tokens = expect(backend.post("/v1/tokens", {"user_id": "ann"}), 201)
        ann = chat.as_user(tokens["access_token"])
        channel = expect(ann.post("/v1/channels", {"name": "general", "kind": "public"}), 201)
        path = f"/v1/channels/{channel['channel_id']}/messages"
        expect(ann.post(path, {"text": "hello", "client_msg_id": "e2e-1"}), 201)

        # The standby streams from the primary, as the workers report it (INF-DB-REPLICA).
        admin = chat.as_admin(info.admin_key)
        assert _until(lambda: _streaming(admin) == ["streaming"], 120), _streaming(admin)

        drills = info.drills
        assert drills.processes is not None
        assert drills.restarts is not None
        assert {
            "api-1",
            "api-2",
            "realtime",
            "postgres",
            "postgres-standby",
            "redis",
            "nginx",
            "backup",
        } <= set(drills.control)
        # Each API container reports its own worker id, the name the drills know it by.
        ids = {
            name: _runtime(url, info.admin_key)["worker_id"]
            for name, url in drills.worker_urls.items()
        }
        assert ids == {"api-1": "api-1", "api-2": "api-2", "realtime": "realtime-1"}, ids
        assert drills.partitions is not None
        assert set(drills.partitions.stores) == {"postgres", "redis"}
        pid, before = drills.processes()["api-1"], drills.restarts()["api-1"]
        drills.control["api-1"].kill()  # SIGKILL from this host, as the OOM killer would
        assert _until(
            lambda: (
                drills.restarts()["api-1"] > before
                and drills.processes().get("api-1") not in (None, pid)
            ),
            60,
        ), "the restart policy brings a killed API container back"
        # A deliberate stop stays down until started: readiness says so meanwhile.
        assert drills.control["redis"].stop() is not None
        assert _until(lambda: not _ready(info.edge.url, ctx), 30)
        drills.control["redis"].start()
        assert _until(lambda: _ready(info.edge.url, ctx), 60)

        probe = ProbeTarget(info)
        version = int(probe.pg.show("server_version_num")["server_version_num"])
        assert version >= 170000, f"the shipped PostgreSQL is 17 (INF-DB-VERSION), got {version}"
        assert probe.pg.show("ssl")["ssl"] == "on", "the shipped PostgreSQL speaks TLS"
        _many_clients_reach_the_edge_as_themselves(info)
        _the_api_containers_reach_the_callback_host(info, target)
        _a_restarted_containers_output_is_still_followed(info, "api-1")
        assert info.edge.config is not None
        assert "limit_req" in info.edge.config(), "nginx -T of the running edge"
        assert info.drills.listeners is not None
        listening = info.drills.listeners()
        assert listening, "the engine publishes the edge at least"
        assert {address for _name, address, _port in listening} == {"127.0.0.1"}

        assert info.backups.dir is not None
        catalogue = info.backups.dir / "catalogue.json"
        assert _until(lambda: _finished(catalogue), 180), "the backup service took a backup"
        first = json.loads(catalogue.read_text())["backups"][0]
        assert first["status"] == "ok", first
        run = target.run
    client = engine()
    leftovers = [
        *client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"}),
        *client.networks.list(filters={"label": f"{RUN_LABEL}={run}"}),
        *client.volumes.list(filters={"label": f"{RUN_LABEL}={run}"}),
    ]
    client.close()
    assert not leftovers, leftovers


def _many_clients_reach_the_edge_as_themselves(info: TargetInfo) -> None:
    """Two clients of this machine, each from an address of the client network, reach the edge
    (TLS verified for its own name) and its access log names each address."""
    clients = info.edge.clients
    assert clients is not None, "as root, the target routes a client network"
    probe = ProbeTarget(info)
    sources = [probe.client_address() for _ in range(2)]
    for source in sources:
        assert source is not None
        context = probe.ssl_context()
        with (
            socket.create_connection(
                clients.address, timeout=10, source_address=(source, 0)
            ) as raw,
            context.wrap_socket(raw, server_hostname=probe.edge_address[0]) as tls,
        ):
            tls.sendall(
                b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            assert tls.recv(64).startswith(b"HTTP/1.1 200"), source
    access = next(f for f in info.observability.log_files if f.name == "access.log")
    assert _until(lambda: all(f'"remote_addr":"{s}"' in access.read_text() for s in sources), 10)


def _the_api_containers_reach_the_callback_host(info: TargetInfo, target: ContainersTarget) -> None:
    """Where probes listen for what the system sends out (webhooks): an API container connects."""
    host = info.drills.callback_host
    assert host is not None
    with socket.create_server((host, 0)) as server:
        port = server.getsockname()[1]
        api = target._running["api-1"].container.get_wrapped_container()
        connect = f"import socket; socket.create_connection(({host!r}, {port}), 5)"
        done = subprocess.run(
            ["docker", "exec", str(api.id), "python", "-c", connect],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def _a_restarted_containers_output_is_still_followed(info: TargetInfo, worker: str) -> None:
    """After the restart above, the worker's log file still receives its output."""
    url = info.drills.worker_urls[worker]
    assert _until(lambda: _ready(url, None), 120), f"{worker} is ready again after its restart"
    request_id = f"e2e-{time.monotonic_ns()}"
    request = urllib.request.Request(  # noqa: S310 - the worker's own URL
        f"{url}/v1/health/live", headers={"X-Request-ID": request_id}
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the worker's own URL
        pass
    log = next(f for f in info.observability.log_files if f.name == f"{worker}.log")
    assert _until(lambda: request_id in log.read_text(), 15), f"{request_id} in {log}"


def _runtime(url: str, admin_key: str) -> dict[str, object]:
    request = urllib.request.Request(f"{url}/v1/admin/runtime", headers={"X-Admin-Key": admin_key})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        report: dict[str, object] = json.load(response)
    return report


def _ready(edge_url: str, ctx: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(f"{edge_url}/v1/health/ready", context=ctx, timeout=5) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:  # urllib's HTTPError (503) and URLError are OSErrors
        return False


def _streaming(admin: ChatClient) -> list[str]:
    """The state of each standby the primary shows, as one API worker reports it."""
    report = expect(admin.get("/v1/admin/runtime"), 200)
    replication = report["dependencies"]["database"]["replication"]
    return [standby["state"] for standby in replication.get("standbys", [])]


def _finished(catalogue: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        return "finished_at" in json.loads(catalogue.read_text())["backups"][0]
    return False


def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(1)
    return False


def test_a_container_the_engine_refuses_is_named_with_its_cause(tmp_path: Path) -> None:
    """An engine that answers but cannot start a container: one sentence naming the container,
    its image and the engine's reason (`preflight run` exits 2 with it), nothing left behind."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n"
        "  redis:\n"
        "    image: chatsdk-redis:0.1.0\n"
        f"    build: {{context: {REPO_ROOT}, dockerfile: system/deploy/images/redis/Dockerfile}}\n"
        "    deploy: {resources: {limits: {memory: 1M}}}\n"
    )
    target = ContainersTarget(compose_path=compose, timeout=60)
    with pytest.raises(TargetUnavailable, match=r"redis(-1)? \(image .+\) did not start: .*memory"):
        target.__enter__()
    client = engine()
    left = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={target.run}"})
    client.close()
    assert not left, left
