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

from preflight.errors import TargetFileInvalid, TargetUnavailable
from preflight.targets.base import (
    CONTROL_ACTIONS,
    Backups,
    ComponentControl,
    Deployment,
    Drills,
    Edge,
    Job,
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


FIELDS = {
    "name",
    "edge_url",
    "ca_file",
    "admin_key",
    "http_url",
    "postgres_dsn",
    "redis_url",
    "control",
    "metrics_urls",
    "log_files",
    "jwt_secret",
    "prometheus_url",
    "alertmanager_url",
    "grafana_url",
    "error_events",
    "backup_dir",
    "backup_offsite_dir",
    "upload_dir",
    "jobs",
    "peak_requests_per_s",
    "cert_renewal",
    "placement",
}
LIST_FIELDS = ("metrics_urls", "log_files")
SECRET_FIELDS = ("admin_key", "postgres_dsn", "redis_url", "jwt_secret", "grafana_url")


def _fail(path: Path, field: str, problem: str) -> TargetFileInvalid:
    return TargetFileInvalid(f"target file {path}: field `{field}` {problem}")


def _resolve(path: Path, field: str, value: object, environ: Mapping[str, str]) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, field, "must be a non-empty string")
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise _fail(path, field, "says `env:` without a variable name")
        if not environ.get(name):
            raise _fail(path, field, f"refers to environment variable {name}, which is not set")
        return environ[name]
    return value


def load_target_file(path: Path, environ: Mapping[str, str] | None = None) -> TargetInfo:
    """Read and validate a target file; every problem names the field."""
    env = os.environ if environ is None else environ
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TargetFileInvalid(f"target file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise TargetFileInvalid(f"target file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TargetFileInvalid(f"target file {path} must be a mapping of fields")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise _fail(path, unknown[0], f"is not a known field (known: {', '.join(sorted(FIELDS))})")
    for required in ("name", "edge_url", "admin_key"):
        if required not in raw:
            raise _fail(path, required, "is missing")

    values = {
        k: _resolve(path, k, v, env)
        for k, v in raw.items()
        if k not in ("control", "jobs", "peak_requests_per_s", "cert_renewal", "placement")
        and k not in LIST_FIELDS
    }
    _check_urls(path, values)
    ca_file: Path | None = None
    if "ca_file" in values:
        ca_file = Path(values["ca_file"])
        if not ca_file.is_absolute():
            ca_file = (path.parent / ca_file).resolve()
        if not ca_file.is_file():
            raise _fail(path, "ca_file", f"names {ca_file}, which is not a readable file")

    return TargetInfo(
        name=values["name"],
        kind="external",
        edge=Edge(
            url=values["edge_url"].rstrip("/"),
            http_url=values.get("http_url"),
            ca_file=ca_file,
            renewal=_renewal(path, raw.get("cert_renewal")),
        ),
        admin_key=values["admin_key"],
        jwt_secret=values.get("jwt_secret"),
        stores=Stores(
            postgres_dsn=values.get("postgres_dsn"),
            redis_url=values.get("redis_url"),
            upload_dir=_optional_path(path, values, "upload_dir"),
        ),
        observability=Observability(
            metrics_urls=tuple(_metrics_urls(path, raw.get("metrics_urls"), env)),
            log_files=tuple(_log_files(path, raw.get("log_files"), env)),
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
            control=_control(path, raw.get("control")), jobs=_jobs(path, raw.get("jobs"))
        ),
        deployment=Deployment(
            peak_requests_per_s=(
                _peak(path, raw["peak_requests_per_s"]) if "peak_requests_per_s" in raw else None
            ),
            placement=_placement(path, raw["placement"]) if "placement" in raw else None,
        ),
    )


URL_SCHEMES = {
    "edge_url": ("https",),
    "http_url": ("http",),
    "postgres_dsn": ("postgresql", "postgres"),
    "redis_url": ("redis", "rediss"),
    "prometheus_url": ("http", "https"),
    "alertmanager_url": ("http", "https"),
    "grafana_url": ("http", "https"),
}


def _strip(url: str | None) -> str | None:
    return url.rstrip("/") if url else None


def _check_urls(path: Path, values: Mapping[str, str]) -> None:
    for name, schemes in URL_SCHEMES.items():
        if name not in values:
            continue
        url = urlsplit(values[name])
        if url.scheme not in schemes or not url.hostname:
            raise _fail(
                path, name, f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host"
            )


def _list(path: Path, field: str, raw: object, environ: Mapping[str, str]) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(path, field, "must be a list of strings")
    return [_resolve(path, f"{field}[{i}]", value, environ) for i, value in enumerate(raw)]


def _metrics_urls(path: Path, raw: object, environ: Mapping[str, str]) -> list[str]:
    urls = _list(path, "metrics_urls", raw, environ)
    for i, value in enumerate(urls):
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise _fail(
                path, f"metrics_urls[{i}]", "must be an http:// or https:// URL with a host"
            )
    return urls


def _log_files(path: Path, raw: object, environ: Mapping[str, str]) -> list[Path]:
    files = []
    for value in _list(path, "log_files", raw, environ):
        file = Path(value)
        files.append(file if file.is_absolute() else (path.parent / file).resolve())
    return files


def _optional_path(path: Path, values: Mapping[str, str], field: str) -> Path | None:
    """A file or directory the target file may name (None when it does not)."""
    return _relative(path, values[field]) if field in values else None


def _relative(path: Path, value: str) -> Path:
    """A file named in the target file: absolute, or relative to the target file."""
    file = Path(value)
    return file if file.is_absolute() else (path.parent / file).resolve()


def _peak(path: Path, raw: object) -> float:
    """A number, not a string: a peak is not a secret, and `"180"` or `180 r/s` in YAML is
    more likely a typo than a figure. An empty value is an error too, not an absent field."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _fail(
            path,
            "peak_requests_per_s",
            f"must be a number of requests/s at the busiest minute of real traffic (got {raw!r})",
        )
    if raw <= 0:
        raise _fail(path, "peak_requests_per_s", f"must be a positive number (got {raw!r})")
    return float(raw)


def _placement(path: Path, raw: object) -> Callable[[], Mapping[str, Placement]]:
    """The placement the file declares: component -> service, node and optional limits."""
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "placement", "must map each component to its service and node")
    declared: dict[str, Placement] = {}
    for name, spec in raw.items():
        where = f"placement.{name}"
        if not isinstance(spec, dict) or not {"service", "node"} <= set(spec):
            raise _fail(path, where, "must give at least service and node")
        unknown = sorted(set(spec) - {"service", "node", "cpus", "memory_bytes"})
        if unknown:
            raise _fail(path, f"{where}.{unknown[0]}", "is not a known field")
        cpus, memory = spec.get("cpus"), spec.get("memory_bytes")
        for key, value in (("cpus", cpus), ("memory_bytes", memory)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise _fail(path, f"{where}.{key}", f"must be a positive number (got {value!r})")
        declared[str(name)] = Placement(
            service=str(spec["service"]),
            node=str(spec["node"]),
            scope=f"component {name}",
            cpus=float(cpus) if cpus is not None else None,
            memory_bytes=int(memory) if memory is not None else None,
            how=f"declared in the target file {path}",
        )
    return lambda: declared


def _control(path: Path, raw: object) -> dict[str, ComponentControl]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, "control", "must map component names to {stop, start, kill} commands")
    controls: dict[str, ComponentControl] = {}
    for component, commands in raw.items():
        field = f"control.{component}"
        if not isinstance(commands, dict) or not commands:
            raise _fail(path, field, "must map some of stop, start, kill to a command")
        for action, command in commands.items():
            if action not in CONTROL_ACTIONS:
                raise _fail(path, f"{field}.{action}", "is not one of stop, start, kill")
            if not isinstance(command, str) or not command.strip():
                raise _fail(path, f"{field}.{action}", "must be a non-empty command string")
        controls[str(component)] = ShellControl(str(component), commands)
    return controls


def _jobs(path: Path, raw: object) -> dict[str, Job]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, "jobs", "must map job names (backup, retention) to a command")
    jobs: dict[str, Job] = {}
    for name, command in raw.items():
        if not isinstance(command, str) or not command.strip():
            raise _fail(path, f"jobs.{name}", "must be a non-empty command string")
        jobs[str(name)] = ShellJob(str(name), command)
    return jobs


def _renewal(path: Path, raw: object) -> ShellRenewal | None:
    if raw is None:
        return None
    fields = raw if isinstance(raw, dict) else {}
    command, schedule = fields.get("command"), fields.get("schedule")
    if set(fields) != {"command", "schedule"} or not all(
        isinstance(v, str) and v.strip() for v in (command, schedule)
    ):
        raise _fail(
            path,
            "cert_renewal",
            "must give `command` (renews the edge's certificate now) and `schedule` (how the "
            "deployment renews on its own), both non-empty strings",
        )
    return ShellRenewal(str(command), str(schedule))


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
