"""The target file: what another process needs to reach a running system."""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight.errors import TargetFileInvalid, TargetUnavailable
from preflight.targets import external
from preflight.targets.base import Edge, ShellControl, Stores, TargetInfo, offered
from preflight.targets.external import fields, load_target_file, write_target_file

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def written_back(info: TargetInfo, tmp_path: Path) -> TargetInfo:
    """`info` written as a target file (private to its owner: mode 0600), then loaded again."""
    out = tmp_path / "out.yaml"
    write_target_file(info, out)
    assert out.stat().st_mode & 0o777 == 0o600
    return load_target_file(out, {})


GOOD = """
name: staging
edge_url: https://127.0.0.1:8443/
admin_key: env:TEST_ADMIN_KEY
postgres_dsn: postgresql://app:pw@127.0.0.1:5432/app
control:
  postgres: {stop: "true", start: "true", kill: "false"}
"""


def test_a_good_file_resolves_env_secrets_and_control(tmp_path: Path) -> None:
    info = load_target_file(write(tmp_path, GOOD), {"TEST_ADMIN_KEY": "k" * 40})
    assert info.kind == "external"
    assert info.edge.url == "https://127.0.0.1:8443"
    assert info.admin_key == "k" * 40
    assert info.stores.redis_url is None
    control = info.drills.control["postgres"]
    assert isinstance(control, ShellControl)
    control.stop()
    with pytest.raises(Exception, match="exited 1"):
        control.kill()


def test_secrets_do_not_show_in_repr(tmp_path: Path) -> None:
    info = load_target_file(write(tmp_path, GOOD), {"TEST_ADMIN_KEY": "sekrit-" * 6})
    assert "sekrit" not in repr(info)
    assert "pw@" not in repr(info)


def minimal(**fields: str | None) -> str:
    """The smallest valid target file, its fields replaced or added by `fields` (None drops one)."""
    merged = {"name": "a", "edge_url": "https://x", "admin_key": "k", **fields}
    return "".join(f"{key}: {value}\n" for key, value in merged.items() if value is not None)


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (minimal(name=None), "name", "is missing"),
        (minimal(edge_url=None), "edge_url", "is missing"),
        (minimal(admin_key=None), "admin_key", "is missing"),
        (minimal(edge_url="http://x"), "edge_url", "https://"),
        (minimal(admin_key="env:NOPE_NOT_SET"), "admin_key", "NOPE_NOT_SET"),
        (minimal(edge="1"), "edge", "not a known field"),
        (minimal(ca_file="nope.pem"), "ca_file", "not a"),
        (minimal(redis_url="http://r"), "redis_url", "redis"),
        (minimal(admin_key="''"), "admin_key", "non-empty"),
        (minimal(control="{api: {restart: x}}"), "control.api.restart", "stop, start, kill"),
        (minimal(placement="{api-1: {node: a}}"), "placement.api-1.service", "is missing"),
        (
            minimal(placement="{api-1: {service: api, node: a, cpus: -1}}"),
            "placement.api-1.cpus",
            "positive number",
        ),
    ],
)
def test_every_problem_names_the_field(tmp_path: Path, text: str, field: str, problem: str) -> None:
    with pytest.raises(TargetFileInvalid) as err:
        load_target_file(write(tmp_path, text), {})
    assert f"`{field}`" in str(err.value)
    assert problem in str(err.value)


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    text = (
        "name: a\n"  # 1
        "edge_url: http://x\n"  # 2
        "admin_key: env:NOT_SET_HERE\n"  # 3
        "jwt_secret: 12\n"  # 4
        "metrics_urls: [http://a/m, '']\n"  # 5
        "control:\n"  # 6
        "  api: {stop: x, restart: y}\n"  # 7
        "grafana: http://g\n"  # 8
        "peak_requests_per_s: -1\n"  # 9
    )
    with pytest.raises(TargetFileInvalid) as err:
        load_target_file(write(tmp_path, text), {})
    path = tmp_path / "t.yaml"
    problems = err.value.problems
    assert f"{path}:4: field `jwt_secret` must be a non-empty string" in problems
    assert f"{path}:5: field `metrics_urls[1]` must be a non-empty string" in problems
    assert f"{path}:7: field `control.api.restart` is not one of stop, start, kill" in problems
    unknown = f"{path}:8: field `grafana` is not a known field; did you mean `grafana_url`?"
    assert any(p.startswith(unknown) for p in problems)
    assert f"{path}:9: field `peak_requests_per_s` must be a positive number (got -1)" in problems
    assert len(problems) == 5, problems
    assert str(err.value).startswith(f"{path} is not a valid target file (5 problems):")
    # Once the shape is right, the values are checked, again all at once.
    text = "name: a\nedge_url: http://x\nadmin_key: env:NOT_SET_HERE\nca_file: none.pem\n"
    with pytest.raises(TargetFileInvalid) as err:
        load_target_file(write(tmp_path, text), {})
    assert [p.split(": field ")[0] for p in err.value.problems] == [
        f"{path}:{line}" for line in (2, 3, 4)
    ]


def test_the_docs_list_every_field_from_the_schema() -> None:
    """docs/verifying-a-deployment.md's table is the schema's, and the module's example shows
    every field, so neither drifts from what the loader accepts."""
    doc = (REPO / "docs/verifying-a-deployment.md").read_text()
    table = doc.split("<!-- target-fields:start -->\n")[1].split("\n<!-- target-fields:end -->")[0]
    assert table == external.fields_markdown(), "regenerate the table: see fields_markdown()"
    assert external.__doc__ is not None
    example = {line.split(":")[0] for line in external.__doc__.splitlines() if ":" in line}
    assert set(fields()) <= example


def test_not_yaml_and_not_a_mapping_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TargetFileInvalid, match="not valid YAML"):
        load_target_file(write(tmp_path, "name: [unclosed\n"), {})
    with pytest.raises(TargetFileInvalid, match="mapping"):
        load_target_file(write(tmp_path, "- a\n- b\n"), {})
    with pytest.raises(TargetFileInvalid, match="does not exist"):
        load_target_file(tmp_path / "missing.yaml", {})


def test_ca_file_is_relative_to_the_target_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("pem")
    info = load_target_file(
        write(tmp_path, "name: a\nedge_url: https://x\nadmin_key: k\nca_file: ca.pem\n"), {}
    )
    assert info.edge.ca_file == (tmp_path / "ca.pem").resolve()


def test_written_file_round_trips_and_is_private(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    info = TargetInfo(
        name="native",
        kind="native",
        edge=Edge("https://127.0.0.1:1234", http_url="http://127.0.0.1:1235", ca_file=ca),
        admin_key="a" * 43,
        stores=Stores(
            postgres_dsn="postgresql://u:p@127.0.0.1:1/db", redis_url="redis://:p@127.0.0.1:2/0"
        ),
    )
    back = written_back(info, tmp_path)
    assert (back.edge.url, back.admin_key, back.edge.ca_file) == (info.edge.url, info.admin_key, ca)
    assert (back.edge.http_url, back.stores.postgres_dsn, back.stores.redis_url) == (
        info.edge.http_url,
        info.stores.postgres_dsn,
        info.stores.redis_url,
    )


def test_metrics_urls_and_log_files_are_read_and_round_trip(tmp_path: Path) -> None:
    text = (
        "name: a\nedge_url: https://x\nadmin_key: k\n"
        "metrics_urls: [http://10.0.0.1:8080/metrics, env:TEST_METRICS_URL]\n"
        "log_files: [logs/api.log, /var/log/nginx/access.log]\n"
    )
    info = load_target_file(
        write(tmp_path, text), {"TEST_METRICS_URL": "https://10.0.0.2:8443/metrics"}
    )
    assert info.observability.metrics_urls == (
        "http://10.0.0.1:8080/metrics",
        "https://10.0.0.2:8443/metrics",
    )
    assert info.observability.log_files == (
        (tmp_path / "logs/api.log").resolve(),
        Path("/var/log/nginx/access.log"),
    )
    back = written_back(info, tmp_path)
    assert (back.observability.metrics_urls, back.observability.log_files) == (
        info.observability.metrics_urls,
        info.observability.log_files,
    )


def test_without_metrics_urls_and_log_files_both_are_empty(tmp_path: Path) -> None:
    info = load_target_file(write(tmp_path, "name: a\nedge_url: https://x\nadmin_key: k\n"), {})
    assert (info.observability.metrics_urls, info.observability.log_files) == ((), ())


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("metrics_urls: http://x/metrics\n", "metrics_urls", "list"),
        ("metrics_urls: [ftp://x/metrics]\n", "metrics_urls[0]", "http://"),
        ("metrics_urls: ['http://x/m', '']\n", "metrics_urls[1]", "non-empty"),
        ("log_files: [a.log, 3]\n", "log_files[1]", "non-empty string"),
    ],
)
def test_bad_metrics_urls_and_log_files_name_the_entry(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    with pytest.raises(TargetFileInvalid) as err:
        load_target_file(write(tmp_path, "name: a\nedge_url: https://x\nadmin_key: k\n" + text), {})
    assert f"`{field}`" in str(err.value)
    assert problem in str(err.value)


def test_the_jwt_secret_is_optional_read_from_the_environment_and_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: s\nedge_url: https://example.test\nadmin_key: k\njwt_secret: env:T_JWT\n"
    )
    monkeypatch.setenv("T_JWT", "s3cret-value-for-signing-tokens")
    info = load_target_file(path)
    assert info.jwt_secret == "s3cret-value-for-signing-tokens"
    assert "s3cret" not in repr(info)
    assert written_back(info, tmp_path).jwt_secret == info.jwt_secret


def test_prometheus_and_alertmanager_urls_are_optional_checked_and_written_back(
    tmp_path: Path,
) -> None:
    base = "name: a\nedge_url: https://x\nadmin_key: k\n"
    info = load_target_file(write(tmp_path, base), {})
    assert (info.observability.prometheus_url, info.observability.alertmanager_url) == (None, None)
    info = load_target_file(
        write(
            tmp_path,
            base + "prometheus_url: http://10.0.0.5:9090/\nalertmanager_url: env:T_AM\n",
        ),
        {"T_AM": "https://am.example:9093"},
    )
    assert (info.observability.prometheus_url, info.observability.alertmanager_url) == (
        "http://10.0.0.5:9090",
        "https://am.example:9093",
    )
    back = written_back(info, tmp_path)
    assert (back.observability.prometheus_url, back.observability.alertmanager_url) == (
        info.observability.prometheus_url,
        info.observability.alertmanager_url,
    )
    with pytest.raises(TargetFileInvalid) as err:
        load_target_file(write(tmp_path, base + "prometheus_url: ftp://x:9090\n"), {})
    assert "`prometheus_url`" in str(err.value)
    assert "http://" in str(err.value)


def test_the_certificate_renewal_command_runs_and_its_failure_is_named(tmp_path: Path) -> None:
    base = "name: a\nedge_url: https://x\nadmin_key: k\n"
    without = load_target_file(write(tmp_path, base), {})
    assert without.edge.renewal is None
    assert "cert_renewal" not in offered(without)
    renewing = load_target_file(
        write(
            tmp_path,
            base + 'cert_renewal: {command: "echo renewed the edge", schedule: every 12 h}\n',
        ),
        {},
    )
    renewal = renewing.edge.renewal
    assert renewal is not None
    assert "cert_renewal" in offered(renewing)
    assert (renewal.schedule, renewal.renew()) == ("every 12 h", "renewed the edge")
    failing = load_target_file(
        write(tmp_path, base + 'cert_renewal: {command: "false", schedule: daily}\n'), {}
    ).edge.renewal
    assert failing is not None
    with pytest.raises(TargetUnavailable, match="`false` exited 1"):
        failing.renew()
    for bad in ("cert_renewal: renew\n", "cert_renewal: {command: renew}\n"):
        with pytest.raises(TargetFileInvalid, match="`cert_renewal` must give `command`"):
            load_target_file(write(tmp_path, base + bad), {})


def test_a_declared_placement_gives_each_component_its_node_and_limits(tmp_path: Path) -> None:
    text = minimal(
        placement="{api-1: {service: api, node: a, cpus: 2, memory_bytes: 1024}, "
        "api-2: {service: api, node: b}}"
    )
    info = load_target_file(write(tmp_path, text), {})
    assert "placement" in offered(info)
    assert info.deployment.placement is not None
    declared = info.deployment.placement()
    assert {n: (p.service, p.node, p.cpus, p.memory_bytes) for n, p in declared.items()} == {
        "api-1": ("api", "a", 2.0, 1024),
        "api-2": ("api", "b", None, None),
    }
    assert "declared in the target file" in declared["api-1"].how
    assert "placement" not in offered(load_target_file(write(tmp_path, minimal()), {}))


def test_the_documented_example_target_file_loads_as_written(tmp_path: Path) -> None:
    """docs/verifying-a-deployment.md's example, word for word, with its secrets in the
    environment and its CA file beside it."""
    doc = (REPO / "docs/verifying-a-deployment.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "staging-ca.pem").write_text("pem")
    environ = {
        "STAGING_ADMIN_KEY": "k" * 40,
        "STAGING_PG_DSN": "postgresql://app:pw@db.staging.example:5432/chatsdk",
        "STAGING_REDIS_URL": "rediss://:pw@redis.staging.example:6379/0",
    }
    info = load_target_file(write(tmp_path, example), environ)
    assert info.name == "staging"
    assert info.deployment.placement is not None
    assert {p.node for p in info.deployment.placement().values()} == {"node-a", "node-b", "node-c"}
