"""The containers target: selection, the compose file as the target reads it, the image inputs,
and what the engine says when it refuses a container. The end-to-end run of system/deploy is
tests/targets/test_containers_run.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from preflight.errors import TargetUnavailable
from preflight.targets import choose_target
from preflight.targets.containers import ContainersTarget, _write_secrets
from preflight.targets.containers.compose import ComposeInvalid, load, seconds
from preflight.targets.containers.engine import RUN_LABEL, engine
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
            "logstore",
            "certbot",
            "prometheus",
            "alertmanager",
            "node-exporter",
            "container-exporter",
        ],
        [
            "api",
            "realtime",
            "postgres-standby",
            "postgres-sync-guard",
            "log-shipper",
            "postgres-exporter",
            "redis-exporter",
        ],
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
