"""The external target: a deployment that already runs, described by a target file (YAML), and
entered once its edge answers.

```yaml
name: staging                          # required
edge_url: https://staging.example:443  # required, https
ca_file: ca.pem                        # optional; relative to the target file
admin_key: env:PREFLIGHT_ADMIN_KEY     # required; any secret may be `env:NAME`
http_url: http://staging.example       # optional: the plain-HTTP port, for redirect probes
postgres_dsn: env:STAGING_PG_DSN       # optional
redis_url: env:STAGING_REDIS_URL       # optional
jwt_secret: env:STAGING_JWT_SECRET     # optional: lets probes check exp/nbf/aud/iss handling
control:                               # optional: commands drills use to break and restore
  postgres: {stop: "...", start: "...", kill: "..."}
metrics_urls:                          # optional: each API worker's internal /metrics
  - http://10.0.0.11:8080/metrics
log_files:                             # optional: log files readable from here (relative to
  - /var/log/chatsdk/api.log           # the target file), for the logging probes
  - /var/log/nginx/chatsdk-access.log
prometheus_url: http://10.0.0.5:9090    # optional: Prometheus and Alertmanager watching the
alertmanager_url: http://10.0.0.5:9093  # system, for the live monitoring probes
grafana_url: env:STAGING_GRAFANA_URL    # optional: Grafana's API (a viewer's user:password in it)
error_events: events.jsonl             # optional: the events your error tracker received,
                                       # one JSON line per Sentry event, for MON-ERROR-TRACKING
backup_dir: /mnt/backups/chatsdk       # optional: the chatsdk.backup repository, readable from
backup_offsite_dir: /mnt/offsite/chatsdk  # here, and its copy in another failure domain
upload_dir: /srv/chatsdk/uploads       # optional: the local upload store (GDPR, restore drills)
jobs:                                  # optional: commands that run a job of the system now
  backup: ssh ops@db1 chatsdk-backup run
  retention: ssh ops@api1 python -m chatsdk.retention
peak_requests_per_s: 180               # optional: API requests/s at the busiest minute of real
                                       # traffic, the peak POST-CAPACITY measures headroom over
cert_renewal:                          # optional: renew the edge's certificate now, as the
  command: ssh ops@edge1 chatsdk-renew-certificate  # deployment does when due (the renewal
  schedule: certbot renew every 12 h   # drill), and how it renews on its own
placement:                             # optional: where each component runs, as declared by
  api-1: {service: api, node: node-a, cpus: 2, memory_bytes: 2147483648}  # the file's author
  api-2: {service: api, node: node-b}  # (INF-HA-NODES; cpus and memory_bytes, the limits set
  redis: {service: redis, node: node-c}  # on it, for PERF-RESOURCE-LIMITS)
```
"""

from __future__ import annotations

import difflib
import math
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator

from preflight.checklist import describe_error, load_schema
from preflight.errors import TargetFileInvalid, TargetUnavailable
from preflight.targets.base import (
    CONTROL_ACTIONS,
    Backups,
    Deployment,
    Drills,
    Edge,
    Observability,
    Placement,
    ShellControl,
    ShellJob,
    ShellRenewal,
    Stores,
    TargetDescription,
    TargetInfo,
    TargetKind,
    Unsupervised,
)
from preflight.targets.describe import describe_running
from preflight.yamlfile import YamlPath, line_of, read_yaml


class ExternalTarget(Unsupervised):
    """A deployment that already runs; entering checks that its edge answers."""

    kind: TargetKind = "external"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.info: TargetInfo | None = None

    def __enter__(self) -> TargetInfo:
        info = load_target_file(self.path)
        context = ssl.create_default_context(
            cafile=str(info.edge.ca_file) if info.edge.ca_file else None
        )
        url = f"{info.edge.url}/v1/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            raise TargetUnavailable(
                f"target {info.name}: the API behind the edge is not ready ({url} answered "
                f"{exc.code}); check the API workers and their database and Redis"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = (
                "set ca_file in the target file to the CA that signed the edge certificate"
                if isinstance(reason, ssl.SSLCertVerificationError)
                else "check that the edge (NGINX) runs and edge_url is right"
            )
            raise TargetUnavailable(
                f"target {info.name}: the edge does not answer at {url} ({reason}); {hint}"
            ) from None
        self.info = info
        return info

    def __exit__(self, *exc: object) -> None:
        self.info = None

    def describe(self) -> TargetDescription:
        """Versions where the target file's DSNs reach the servers; no configuration digests
        (the deployment's files are not ours to read)."""
        return describe_running(self.info)


SCHEMA = "target"
LIST_FIELDS = ("metrics_urls", "log_files")
STRUCTURED = (
    "control",
    "jobs",
    "peak_requests_per_s",
    "cert_renewal",
    "placement",
    *LIST_FIELDS,
)
SECRET_FIELDS = ("admin_key", "postgres_dsn", "redis_url", "jwt_secret", "grafana_url")
URL_SCHEMES = {
    "edge_url": ("https",),
    "http_url": ("http",),
    "postgres_dsn": ("postgresql", "postgres"),
    "redis_url": ("redis", "rediss"),
    "prometheus_url": ("http", "https"),
    "alertmanager_url": ("http", "https"),
    "grafana_url": ("http", "https"),
}


def fields() -> dict[str, str]:
    """Every field a target file accepts, with what it is for (from the shipped JSON Schema)."""
    properties = load_schema(SCHEMA)["properties"]
    return {name: spec["description"] for name, spec in properties.items()}


def fields_markdown() -> str:
    """The table of every field that docs/verifying-a-deployment.md carries (a test keeps the two
    equal; regenerate with `python -c "from preflight.targets.external import fields_markdown;
    print(fields_markdown())"`)."""
    required = set(load_schema(SCHEMA)["required"])
    rows = [
        f"| `{name}` | {'required' if name in required else 'optional'} | {text} |"
        for name, text in fields().items()
    ]
    return "\n".join(["| field | | what it is for |", "| --- | --- | --- |", *rows])


class _Problems:
    """Every problem of one target file, each with its line and field, found in one pass."""

    def __init__(self, path: Path, lines: dict[YamlPath, int]) -> None:
        self.path, self.lines, self.found = path, lines, list[tuple[int, str]]()

    def add(self, at: YamlPath, problem: str) -> None:
        line = line_of(self.lines, at)
        self.found.append((line, f"{self.path}:{line}: field `{_field(at)}` {problem}"))

    def raise_any(self) -> None:
        if self.found:
            raise TargetFileInvalid(self.path, [m for _, m in sorted(set(self.found))])


def _field(at: YamlPath) -> str:
    """A field's name as the user writes it: control.api.stop, metrics_urls[1]."""
    name = ""
    for part in at:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or "(top level)"


def _schema_problems(raw: object, problems: _Problems) -> None:
    for error in Draft202012Validator(load_schema(SCHEMA)).iter_errors(raw):
        at: YamlPath = tuple(error.absolute_path)
        names, message = describe_error(error)
        if error.validator == "required":
            message = "is missing"
        elif error.validator == "additionalProperties" and not at:
            for name in names:
                near = difflib.get_close_matches(name, fields(), n=1)
                hint = f"; did you mean `{near[0]}`?" if near else ""
                known = ", ".join(sorted(fields()))
                problems.add((name,), f"is not a known field{hint} (known: {known})")
            continue
        elif error.validator in ("minLength", "pattern") and isinstance(error.instance, str):
            message = "must be a non-empty string"
        elif error.validator == "type":
            message = _type_message(at, error.validator_value, error.instance)
        elif error.validator == "exclusiveMinimum":
            message = f"must be a positive number (got {error.instance!r})"
        elif error.validator in ("additionalProperties", "minProperties") and at[:1] == (
            "control",
        ):
            message = "must map some of stop, start, kill to a command"
            names = [n for n in names if n not in CONTROL_ACTIONS]
            if names:
                for name in names:
                    problems.add((*at, name), "is not one of stop, start, kill")
                continue
        if at[:1] == ("cert_renewal",):
            problems.add(
                ("cert_renewal",),
                "must give `command` (renews the edge's certificate now) and `schedule` (how "
                "the deployment renews on its own), both non-empty strings",
            )
            continue
        for where in [(*at, name) for name in names] or [at]:
            problems.add(where, message)


def _type_message(at: YamlPath, wanted: object, got: object) -> str:
    if at == ("peak_requests_per_s",):
        return f"must be a number of requests/s at the busiest minute of real traffic (got {got!r})"
    if at and at[0] in LIST_FIELDS and len(at) == 1:
        return "must be a list of strings"
    if wanted == "object":
        return "must be a mapping"
    return "must be a non-empty string" if wanted == "string" else f"must be a {wanted}"


def load_target_file(path: Path, environ: Mapping[str, str] | None = None) -> TargetInfo:
    """Read and validate a target file against its schema and rules; raise TargetFileInvalid
    naming every problem with its line and field, all found in one pass."""
    env = os.environ if environ is None else environ
    if not path.is_file():
        raise TargetFileInvalid(path, [f"target file {path} does not exist"])
    raw, lines = read_yaml(path, TargetFileInvalid)
    if not isinstance(raw, dict):
        raise TargetFileInvalid(path, [f"{path}:1: a target file must be a mapping of fields"])
    problems = _Problems(path, lines)
    _schema_problems(raw, problems)
    peak = raw.get("peak_requests_per_s")
    if isinstance(peak, float) and not math.isfinite(peak):
        problems.add(("peak_requests_per_s",), _type_message(("peak_requests_per_s",), "", peak))
    if problems.found:
        problems.raise_any()
    values = {k: _resolve(problems, (k,), v, env) for k, v in raw.items() if k not in STRUCTURED}
    _check_urls(problems, values)
    metrics_urls = _metrics_urls(problems, raw.get("metrics_urls"), env)
    log_files = _log_files(path, problems, raw.get("log_files"), env)
    ca_file: Path | None = None
    if values.get("ca_file"):
        ca_file = _relative(path, values["ca_file"])
        if not ca_file.is_file():
            problems.add(("ca_file",), f"names {ca_file}, which is not a readable file")
    problems.raise_any()

    return TargetInfo(
        name=values["name"],
        kind="external",
        edge=Edge(
            url=values["edge_url"].rstrip("/"),
            http_url=values.get("http_url"),
            ca_file=ca_file,
            renewal=_renewal(raw.get("cert_renewal")),
        ),
        admin_key=values["admin_key"],
        jwt_secret=values.get("jwt_secret"),
        stores=Stores(
            postgres_dsn=values.get("postgres_dsn"),
            redis_url=values.get("redis_url"),
            upload_dir=_optional_path(path, values, "upload_dir"),
        ),
        observability=Observability(
            metrics_urls=tuple(metrics_urls),
            log_files=tuple(log_files),
            prometheus_url=_strip(values.get("prometheus_url")),
            alertmanager_url=_strip(values.get("alertmanager_url")),
            grafana_url=_strip(values.get("grafana_url")),
            error_events=_optional_path(path, values, "error_events"),
        ),
        backups=Backups(
            dir=_optional_path(path, values, "backup_dir"),
            offsite_dir=_optional_path(path, values, "backup_offsite_dir"),
        ),
        drills=Drills(
            control={
                str(component): ShellControl(str(component), commands)
                for component, commands in (raw.get("control") or {}).items()
            },
            jobs={
                str(name): ShellJob(str(name), command)
                for name, command in (raw.get("jobs") or {}).items()
            },
        ),
        deployment=Deployment(
            peak_requests_per_s=(
                float(raw["peak_requests_per_s"]) if "peak_requests_per_s" in raw else None
            ),
            placement=_placement(path, raw["placement"]) if "placement" in raw else None,
        ),
    )


def _resolve(problems: _Problems, at: YamlPath, value: object, environ: Mapping[str, str]) -> str:
    """A string value, or the environment variable an `env:NAME` value names."""
    text = str(value)
    if text.startswith("env:"):
        name = text[4:]
        if not name:
            problems.add(at, "says `env:` without a variable name")
            return ""
        if not environ.get(name):
            problems.add(at, f"refers to environment variable {name}, which is not set")
            return ""
        return environ[name]
    return text


def _strip(url: str | None) -> str | None:
    return url.rstrip("/") if url else None


def _check_urls(problems: _Problems, values: Mapping[str, str]) -> None:
    for name, schemes in URL_SCHEMES.items():
        if not values.get(name):
            continue
        url = urlsplit(values[name])
        if url.scheme not in schemes or not url.hostname:
            wanted = " or ".join(s + "://" for s in schemes)
            problems.add((name,), f"must be a {wanted} URL with a host")


def _metrics_urls(problems: _Problems, raw: object, environ: Mapping[str, str]) -> list[str]:
    entries = raw if isinstance(raw, list) else []
    urls = [_resolve(problems, ("metrics_urls", i), v, environ) for i, v in enumerate(entries)]
    for i, value in enumerate(urls):
        url = urlsplit(value)
        if value and (url.scheme not in ("http", "https") or not url.hostname):
            problems.add(("metrics_urls", i), "must be an http:// or https:// URL with a host")
    return urls


def _log_files(
    path: Path, problems: _Problems, raw: object, environ: Mapping[str, str]
) -> list[Path]:
    entries = raw if isinstance(raw, list) else []
    values = [_resolve(problems, ("log_files", i), v, environ) for i, v in enumerate(entries)]
    return [_relative(path, value) for value in values if value]


def _optional_path(path: Path, values: Mapping[str, str], field: str) -> Path | None:
    """A file or directory the target file may name (None when it does not)."""
    return _relative(path, values[field]) if values.get(field) else None


def _relative(path: Path, value: str) -> Path:
    """A file named in the target file: absolute, or relative to the target file."""
    file = Path(value)
    return file if file.is_absolute() else (path.parent / file).resolve()


def _placement(path: Path, raw: Mapping[str, Any]) -> Callable[[], Mapping[str, Placement]]:
    """The placement the file declares (the schema checked its shape): component -> service,
    node and optional limits."""
    declared = {
        str(name): Placement(
            service=str(spec["service"]),
            node=str(spec["node"]),
            scope=f"component {name}",
            cpus=float(spec["cpus"]) if spec.get("cpus") is not None else None,
            memory_bytes=(
                int(spec["memory_bytes"]) if spec.get("memory_bytes") is not None else None
            ),
            how=f"declared in the target file {path}",
        )
        for name, spec in raw.items()
    }
    return lambda: declared


def _renewal(raw: object) -> ShellRenewal | None:
    if not isinstance(raw, dict):
        return None
    return ShellRenewal(str(raw["command"]), str(raw["schedule"]))


def write_target_file(info: TargetInfo, path: Path) -> None:
    """Write a target file another process can use; 0600 because it holds secrets."""
    data: dict[str, str | float | list[str]] = {"name": info.name, "edge_url": info.edge.url}
    if info.edge.http_url:
        data["http_url"] = info.edge.http_url
    if info.edge.ca_file:
        data["ca_file"] = str(info.edge.ca_file)
    data["admin_key"] = info.admin_key
    if info.stores.postgres_dsn:
        data["postgres_dsn"] = info.stores.postgres_dsn
    if info.stores.redis_url:
        data["redis_url"] = info.stores.redis_url
    if info.jwt_secret:
        data["jwt_secret"] = info.jwt_secret
    if info.observability.metrics_urls:
        data["metrics_urls"] = list(info.observability.metrics_urls)
    if info.observability.log_files:
        data["log_files"] = [str(f) for f in info.observability.log_files]
    if info.observability.prometheus_url:
        data["prometheus_url"] = info.observability.prometheus_url
    if info.observability.alertmanager_url:
        data["alertmanager_url"] = info.observability.alertmanager_url
    if info.observability.grafana_url:
        data["grafana_url"] = info.observability.grafana_url
    if info.observability.error_events:
        data["error_events"] = str(info.observability.error_events)
    if info.deployment.peak_requests_per_s is not None:
        data["peak_requests_per_s"] = info.deployment.peak_requests_per_s
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# written by `preflight up` for the {info.kind} target; holds secrets\n")
        yaml.safe_dump(data, f, sort_keys=False)
    tmp.replace(path)
