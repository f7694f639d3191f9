"""Shared by the monitoring probes: where the monitoring artefacts are, promtool and amtool, the
metric names a PromQL expression uses, the workers' /metrics, and the target's log files.

The artefacts are read from system/monitoring of the repository the probes judge (--repo-dir,
the `monitoring` fixture; tests point it at a broken copy).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from preflight.probe.target import ProbeTarget

REPO = Path(__file__).resolve().parents[2]
API_JOB = "chatsdk-api"
SEVERITIES = frozenset({"critical", "warning", "info"})
TOOL_TIMEOUT_S = 180.0  # a hang guard: `promtool test rules` takes 7 s alone, over 60 s on a
# machine that also runs the test suite and a full checklist (seen once)
HTTP_TIMEOUT_S = 5.0
# How long and how often a probe looks again at what a worker counts or logs.
WAIT_S = 5.0
POLL_S = 0.2


# -- tools -----------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of promtool, amtool or logrotate; a missing tool means the probe cannot decide."""
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed; run scripts/setup.sh as root to install it")
    return found


def run(args: list[str], cwd: Path | None = None, stdin: str | None = None) -> tuple[int, str]:
    """Exit code and combined output of a tool, bounded in time."""
    result = subprocess.run(
        args,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def last_lines(text: str, n: int = 6) -> str:
    return " | ".join(line.strip() for line in text.splitlines()[-n:] if line.strip())


# -- alert rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    group: str
    raw: dict[str, Any]

    @property
    def alert(self) -> str:
        return str(self.raw.get("alert", ""))

    @property
    def expr(self) -> str:
        return str(self.raw.get("expr", ""))

    @property
    def labels(self) -> dict[str, Any]:
        labels = self.raw.get("labels") or {}
        return labels if isinstance(labels, dict) else {}

    @property
    def annotations(self) -> dict[str, Any]:
        annotations = self.raw.get("annotations") or {}
        return annotations if isinstance(annotations, dict) else {}

    def __str__(self) -> str:
        return f"{self.alert} ({self.labels.get('severity', 'no severity')})"


def fires(
    rules_file: Path, series: dict[str, str], interval: str, alerts: Iterable[str], at: str
) -> tuple[bool, str]:
    """Whether any of `alerts` is firing at `at` when Prometheus evaluates `rules_file` over
    `series` (promtool test rules on a generated test); the second value is promtool's output."""
    names = "|".join(re.escape(a) for a in sorted(set(alerts)))
    test = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": interval,
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "promql_expr_test": [
                    {
                        "expr": f'(count(ALERTS{{alertstate="firing", alertname=~"{names}"}}) '
                        "or vector(0)) > bool 0",
                        "eval_time": at,
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                ],
            }
        ],
    }
    with tempfile.TemporaryDirectory(prefix="preflight-promtool-") as tmp:
        path = Path(tmp) / "probe.test.yml"
        path.write_text(yaml.safe_dump(test, sort_keys=False))
        code, out = run([tool("promtool"), "test", "rules", str(path)])
    if code == 0:
        return True, out
    if "got: {} 0E+00" in out or "got: {} 0" in out:
        return False, out
    raise RuntimeError(f"promtool could not evaluate the rules: {last_lines(out)}")


# -- Alertmanager routes -------------------------------------------------------------------------

PAGER_CONFIGS = ("pagerduty_configs", "opsgenie_configs", "victorops_configs")
RECEIVER_CONFIGS = (
    *PAGER_CONFIGS,
    "slack_configs",
    "email_configs",
    "webhook_configs",
    "msteams_configs",
    "telegram_configs",
    "pushover_configs",
    "discord_configs",
    "webex_configs",
    "sns_configs",
    "wechat_configs",
)


def routes(config: Path, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager's routing tree of `config` chooses for an alert with `labels`
    (`amtool config routes test`)."""
    args = [f"{k}={v}" for k, v in sorted(labels.items())]
    code, out = run([tool("amtool"), "config", "routes", "test", f"--config.file={config}", *args])
    if code != 0:
        raise RuntimeError(f"amtool config routes test failed (exit {code}): {last_lines(out)}")
    lines = [line for line in out.splitlines() if line.strip() and "Warning:" not in line]
    return lines[-1].strip().split(",") if lines else []


def integrations(config: Path) -> dict[str, list[str]]:
    """Receiver name -> the integrations it delivers through (`slack_configs`, ...)."""
    data = yaml.safe_load(config.read_text()) or {}
    return {
        str(r.get("name")): [c for c in RECEIVER_CONFIGS if r.get(c)]
        for r in data.get("receivers") or []
    }


def severity_routes(config: Path, severities: Iterable[str]) -> dict[str, list[str]]:
    """Severity -> the receivers the routes of `config` choose for an alert of that severity
    (as alerts.yml labels them: `service="chatsdk"`, the API's job)."""
    return {
        severity: routes(config, {"severity": severity, "service": "chatsdk", "job": API_JOB})
        for severity in sorted(set(severities))
    }


def describe_routes(config: Path, chosen: dict[str, list[str]]) -> list[str]:
    """One line per severity: the receivers chosen and what each delivers through."""
    kinds = integrations(config)
    return [
        f"severity={severity}: the route of {config.name} chooses "
        + (
            ", ".join(f"{n} ({', '.join(kinds.get(n) or ['no integration'])})" for n in names)
            or "nothing"
        )
        for severity, names in chosen.items()
    ]


# -- PromQL --------------------------------------------------------------------------------------

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_NAME = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names, numbers
    and Grafana variables are left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub("", text)
    text = _OFFSET.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match[1]
        if name.lower() in KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "5m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def without_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


@dataclass(frozen=True)
class Monitoring:
    """The monitoring artefacts of the repository the probes judge (its system/monitoring)."""

    dir: Path

    @classmethod
    def of(cls, repo_root: Path) -> Monitoring:
        return cls((repo_root / "system" / "monitoring").resolve())

    def artefact(self, relative: str) -> Path:
        """A file of the monitoring directory; fails the probe when it is missing."""
        __tracebackhide__ = True
        path = self.dir / relative
        assert path.is_file(), f"{relative} must exist in {self.dir} (got no such file)"
        return path

    def load_yaml(self, relative: str) -> Any:
        return yaml.safe_load(self.artefact(relative).read_text())

    def alert_rules(self) -> list[Rule]:
        """Every alerting rule of alerts.yml (recording rules are left out)."""
        data = self.load_yaml("alerts.yml") or {}
        rules = [
            Rule(str(group.get("name", "")), rule)
            for group in data.get("groups") or []
            for rule in group.get("rules") or []
            if isinstance(rule, dict) and "alert" in rule
        ]
        assert rules, f"{self.artefact('alerts.yml')} must define alerting rules (got none)"
        return rules

    def rules_using(
        self, metric: str, also: Callable[[Rule], bool] = lambda _r: True
    ) -> list[Rule]:
        return [r for r in self.alert_rules() if metric in metric_names(r.expr) and also(r)]

    def declared_exporter_metrics(self) -> dict[str, str]:
        """Metric name -> the scrape job of the exporter that exports it (exporters.yml); the
        series Prometheus makes itself map to ``prometheus``."""
        data = self.load_yaml("exporters.yml") or {}
        names = {str(n): "prometheus" for n in data.get("prometheus") or []}
        for exporter in (data.get("exporters") or {}).values():
            for name in exporter.get("metrics") or []:
                names[str(name)] = str(exporter.get("job", ""))
        return names

    def scrape_jobs(self) -> set[str]:
        data = self.load_yaml("prometheus.yml") or {}
        return {str(job.get("job_name")) for job in data.get("scrape_configs") or []}

    def unknown_metrics(self, names: Iterable[str], exposed: set[str]) -> dict[str, str]:
        """name -> why it is unknown: neither on the workers' /metrics nor exported by an
        exporter that prometheus.yml scrapes."""
        declared = self.declared_exporter_metrics()
        jobs = self.scrape_jobs() | {"prometheus"}
        unknown = {}
        for name in sorted(set(names)):
            if name in exposed:
                continue
            job = declared.get(name)
            if job is None:
                unknown[name] = "not exposed by the API workers and not declared in exporters.yml"
            elif job not in jobs:
                unknown[name] = f"declared for job {job!r}, which prometheus.yml does not scrape"
        return unknown


# -- dashboards ----------------------------------------------------------------------------------


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows."""
    for panel in node.get("panels") or []:
        yield panel
        yield from panels(panel)


def queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard; fails on a panel without one."""
    __tracebackhide__ = True
    try:
        dashboard = json.loads(path.read_text())
    except ValueError as exc:
        raise AssertionError(f"dashboard {path} must be valid JSON (got {exc})") from None
    found = []
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        exprs = [t.get("expr") for t in panel.get("targets") or [] if t.get("expr")]
        assert exprs, f"panel {panel.get('title')!r} of {path.name} must have a query (got none)"
        found += [(str(panel.get("title")), str(e)) for e in exprs]
    assert found, f"dashboard {path} must have panels with queries (got none)"
    return found


# -- the live Prometheus and Alertmanager ----------------------------------------------------------

WATCH_TIMEOUT_S = 15.0
SCRAPE_POLL_S = 1.0  # the pace of Prometheus' scrapes


def get_json(url: str, params: dict[str, str] | None = None) -> Any:
    """The decoded JSON of one GET; a Prometheus answer's `data`. Any failure is an error (the
    probe could not decide), not a verdict."""
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310
        body = json.loads(resp.read())
    if isinstance(body, dict) and "status" in body:
        if body["status"] != "success":
            raise RuntimeError(f"GET {url} answered {body.get('error') or body}")
        return body.get("data")
    return body


def prom(target: ProbeTarget, path: str, **params: str) -> Any:
    return get_json(target.prometheus_url + path, params or None)


def promql(target: ProbeTarget, expr: str) -> list[dict[str, Any]]:
    """The samples of an instant query (the result of a scalar query counts as one)."""
    data = prom(target, "/api/v1/query", query=expr)
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return [{"value": result}]
    return list(result or [])


# -- logs ----------------------------------------------------------------------------------------


def is_edge_access(record: dict[str, Any]) -> bool:
    return "remote_addr" in record and "request_time" in record


def is_api(record: dict[str, Any]) -> bool:
    return "logger" in record and "worker_id" in record
