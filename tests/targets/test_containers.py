"""The containers target: selection, the compose file as the target reads it, the image inputs,
and one end-to-end run of system/deploy on this machine's Docker engine (set-up starts one)."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from preflight.client import ChatClient, expect
from preflight.errors import TargetUnavailable
from preflight.targets import choose_target
from preflight.targets.containers import ContainersTarget, _write_secrets
from preflight.targets.containers.compose import ComposeInvalid, load, seconds
from preflight.targets.containers.engine import RUN_LABEL, docker_available, engine
from preflight.targets.containers.images import IMAGES, REPO_ROOT, Image, _files_digest

COMPOSE = REPO_ROOT / "system" / "deploy" / "docker-compose.yml"


def no_engine() -> str | None:
    return "no Docker engine answers (test)"


def an_engine() -> str | None:
    return None


def test_auto_is_native_and_containers_needs_an_engine() -> None:
    assert choose_target("auto", an_engine).kind == "native"
    assert choose_target("containers", an_engine).kind == "containers"
    with pytest.raises(TargetUnavailable, match="no Docker engine"):
        choose_target("containers", no_engine)


# -- the compose file as the target reads it -----------------------------------------------------


def test_the_shipped_compose_file_starts_stores_before_the_api_and_the_edge_last() -> None:
    plan = load(COMPOSE)
    order = plan.start_order()
    assert order.index("postgres") < order.index("api")
    assert order.index("redis") < order.index("api")
    assert order[-1] == "nginx"
    assert plan.waves() == [
        ["postgres", "redis"],
        ["api", "realtime", "postgres-standby", "backup"],
        ["nginx"],
    ]
    assert plan.networks["backend"] is True, "the stores' network is internal"
    for service in plan.services.values():
        assert service.dockerfile is not None, f"{service.name} builds its image here"
        assert service.restart == "unless-stopped", service.name
        assert service.healthcheck is not None, service.name
        assert service.mem_limit, service.name
        assert service.nano_cpus, service.name


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
    files, values = _write_secrets(tmp_path / "s", load(COMPOSE))
    assert set(files) == set(load(COMPOSE).secrets)
    assert values["postgres_app_password"] in values["database_url"]
    assert values["postgres_backup_password"] in values["backup_database_url"]
    assert values["redis_password"] in values["redis_url"]
    assert len(set(values.values())) == len(values)
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700


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
        assert info.edge.url.startswith("https://127.0.0.1:")
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


def _ready(edge_url: str, ctx: ssl.SSLContext) -> bool:
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
