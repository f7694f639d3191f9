"""The containers target: selection logic and wiring, checked without an engine; the end-to-end
run needs a Docker engine and skips where none answers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from preflight.errors import TargetUnavailable
from preflight.targets import choose_target
from preflight.targets.containers import (
    DOCKERFILE,
    REPO_ROOT,
    ROLE_SQL_PATH,
    ContainersTarget,
    docker_available,
    plan_containers,
)
from preflight.targets.servers import APP_ROLE_SQL, postgres_args


def no_engine() -> str | None:
    return "no Docker engine answers (test)"


def engine() -> str | None:
    return None


def test_auto_picks_containers_only_where_an_engine_answers() -> None:
    assert choose_target("auto", engine).kind == "containers"
    chosen = choose_target("auto", no_engine)
    assert chosen.kind == "native"
    assert "no Docker engine" in chosen.reason


def test_forcing_containers_without_an_engine_says_so() -> None:
    with pytest.raises(TargetUnavailable, match=r"no Docker engine.*--target native"):
        choose_target("containers", no_engine)


def test_native_never_asks_docker() -> None:
    def explode() -> str | None:
        raise AssertionError("native must not probe Docker")

    assert choose_target("native", explode).kind == "native"


def test_anything_else_is_a_target_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: x\n")
    chosen = choose_target(str(path), no_engine)
    assert (chosen.kind, chosen.path) == ("external", path)
    with pytest.raises(TargetUnavailable, match="neither auto, native, containers"):
        choose_target(str(tmp_path / "missing.yaml"), no_engine)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="preflight-plan-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_plan_wires_api_to_postgres_and_redis_by_alias(workdir: Path) -> None:
    plan = plan_containers(workdir, workers=3)
    assert [s.aliases[0] for s in plan.api] == ["api-0", "api-1", "api-2"]
    for spec in plan.api:
        assert "@postgres:5432/chatsdk" in spec.env["CHATSDK_DATABASE_URL"]
        assert "@redis:6379/0" in spec.env["CHATSDK_REDIS_URL"]
        assert spec.env["CHATSDK_ADMIN_KEY"] == plan.admin_key
    for spec in plan.api:
        assert spec.env["CHATSDK_STORAGE"] == "s3"
        assert spec.env["CHATSDK_S3_ENDPOINT"] == "http://minio:9000"
        assert spec.env["CHATSDK_S3_SECRET_KEY"] == plan.minio.env["MINIO_ROOT_PASSWORD"]
    assert plan.postgres.env["POSTGRES_INITDB_ARGS"].startswith("--data-checksums")
    # The role and database come from the same SQL file as the native target's.
    host_sql, inside, mode = plan.postgres.volumes[0]
    assert (inside, mode) == (ROLE_SQL_PATH, "ro")
    assert Path(host_sql).read_text() == APP_ROLE_SQL
    assert "NOSUPERUSER NOCREATEROLE NOCREATEDB" in APP_ROLE_SQL
    assert plan.postgres.command == ("postgres", *postgres_args())


def test_plan_edge_uses_the_shared_templates_and_every_worker(workdir: Path) -> None:
    plan = plan_containers(workdir, workers=2)
    conf_dir = workdir / "edge"
    rendered = "\n".join(p.read_text() for p in conf_dir.rglob("*.conf"))
    assert "server api-0:8080" in rendered
    assert "server api-1:8080" in rendered
    # Inside its own network namespace the edge must listen on every interface to be mapped.
    assert "listen 0.0.0.0:8443 ssl http2;" in rendered
    assert "listen 0.0.0.0:8080;" in rendered
    assert "listen 127.0.0.1" not in rendered
    host, inside, _mode = plan.edge.volumes[0]
    assert host == inside == str(workdir)
    assert (workdir / "pki" / "ca.pem").is_file()


def test_plan_keeps_secrets_out_of_command_lines(workdir: Path) -> None:
    plan = plan_containers(workdir)
    secrets = [plan.admin_key, plan.app_password]
    for spec in (plan.postgres, plan.redis, plan.minio, plan.edge, *plan.api):
        for secret in secrets:
            assert secret not in " ".join(spec.command), spec.name
    assert "requirepass" in (workdir / "redis.conf").read_text()


def test_the_dockerfile_exists_and_runs_the_api_as_non_root() -> None:
    text = (REPO_ROOT / DOCKERFILE).read_text()
    assert 'CMD ["python", "-m", "chatsdk"]' in text
    assert "USER 10001" in text


def test_without_an_engine_entering_fails_clearly() -> None:
    if docker_available() is None:
        pytest.skip("a Docker engine answers here; the clear-failure path is for machines without")
    with pytest.raises(TargetUnavailable, match=r"no Docker engine answers.*--target native"):
        ContainersTarget().__enter__()


@pytest.mark.skipif(
    docker_available() is not None, reason="needs a Docker engine; none answers on this machine"
)
def test_containers_target_end_to_end() -> None:
    import ssl  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with ContainersTarget(workers=2) as info:
        assert info.edge.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(info.edge.ca_file))
        with urllib.request.urlopen(f"{info.edge.url}/v1/health/ready", context=ctx) as resp:  # noqa: S310
            assert resp.status == 200
            assert resp.headers["Strict-Transport-Security"]
