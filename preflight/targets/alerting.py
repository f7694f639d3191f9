"""The alert rules and routes as a target's own Prometheus and Alertmanager load them, and the
alert drill's routing (AlertRouting in base.py) over them; the native and containers targets
both use it.

- `render_rules`, `render_alertmanager`: system/monitoring's alerts.yml with short group
  intervals (expressions and `for` as written), alertmanager.yml with its routes and inhibition
  as written but receivers that deliver nowhere (no secret file is needed).
- `render_drill_rules`, `render_drill_alertmanager`: the drill's versions, whose `for`
  durations, longer range windows and offsets, and the routes' waits are shortened, so an alert
  reaches its receiver within seconds; every receiver is a webhook of the drill.
- `DrillRouting`: renders the drill's versions over the running ones, has the target reload
  Prometheus and Alertmanager, and waits until both serve them; `restore` renders the real ones
  and reloads again.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from preflight.errors import TargetUnavailable
from preflight.polling import until

SCRAPE_INTERVAL = "2s"
# The drill's `for` stays longer than discovery takes to drop a stopped worker (a DNS refresh
# and a scrape, 2 s each on the targets), as production's 1m is longer than Prometheus' 30 s
# default DNS refresh: otherwise the failed scrape before the drop would fire `up == 0` in the
# drill but never in production.
DRILL_HOLD = "10s"
DRILL_WINDOW = "30s"
DRILL_ROUTE_TIMING = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1m"}
# A range window (`[5m]`, `[1h:]`) or an offset (`offset 10m`) of a PromQL expression.
_RANGE = re.compile(r"(?P<open>\[|\boffset\s+)(?P<range>\d+[smhdwy])(?=[\]:\s)]|$)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
RELOAD_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"


def _duration_s(text: str) -> int:
    return int(text[:-1]) * _UNIT_S[text[-1]]


def render_rules(source: Path, out: Path, interval: str = SCRAPE_INTERVAL) -> None:
    """alerts.yml with every group evaluated every `interval`; nothing else changes."""
    rules: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    for group in rules.get("groups") or []:
        group["interval"] = interval
    out.write_text(yaml.safe_dump(rules, sort_keys=False))


def _kept_global(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (config.get("global") or {}).items() if not k.startswith("smtp_")}


def render_alertmanager(source: Path, out: Path) -> None:
    """alertmanager.yml with its routes and inhibition, receivers kept by name but empty."""
    config: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    config["global"] = _kept_global(config)
    config["receivers"] = [{"name": r["name"]} for r in config.get("receivers") or []]
    config.pop("templates", None)
    out.write_text(yaml.safe_dump(config, sort_keys=False))


def render_drill_rules(
    source: Path,
    out: Path,
    *,
    hold: str = DRILL_HOLD,
    window: str = DRILL_WINDOW,
    interval: str = SCRAPE_INTERVAL,
) -> None:
    """alerts.yml for an alert drill: every `for` becomes `hold`, every range window and offset
    longer than `window` becomes `window`; expressions and labels are otherwise as written."""
    rules: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    shorter = _duration_s(window)

    def shorten(match: re.Match[str]) -> str:
        return f"{match['open']}{window}" if _duration_s(match["range"]) > shorter else match[0]

    for group in rules.get("groups") or []:
        group["interval"] = interval
        for rule in group.get("rules") or []:
            if "alert" in rule and "for" in rule:
                rule["for"] = hold
            rule["expr"] = _RANGE.sub(shorten, str(rule.get("expr", "")))
    out.write_text(yaml.safe_dump(rules, sort_keys=False))


def render_drill_alertmanager(source: Path, out: Path, webhook_url: str) -> None:
    """alertmanager.yml for an alert drill: routes and inhibition as written, waits shortened,
    and every receiver a webhook at `{webhook_url}/{receiver name}`."""
    config: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    config["global"] = _kept_global(config)
    config["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [{"url": f"{webhook_url}/{r['name']}", "send_resolved": False}],
        }
        for r in config.get("receivers") or []
    ]
    config.pop("templates", None)

    def shorten(route: dict[str, Any], top: bool) -> None:
        for key, value in DRILL_ROUTE_TIMING.items():
            if top or key in route:
                route[key] = value
        for child in route.get("routes") or []:
            shorten(child, top=False)

    shorten(config.setdefault("route", {}), top=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2.0) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


@dataclass(frozen=True)
class DrillRouting:
    """AlertRouting (preflight/targets/base.py) of a target whose Prometheus and Alertmanager
    read alerts.yml and alertmanager.yml from `folder` (rendered from `source`, system/monitoring
    or a copy): `reload` has both read them again (SIGHUP), and the published URLs say when they
    serve what was rendered. `listen_host`: the address of this machine where Alertmanager
    reaches the drill's webhook; `logs`: where to look when a reload fails."""

    source: Path
    folder: Path
    reload: Callable[[], None]
    prometheus_url: str
    alertmanager_url: str
    logs: str
    listen_host: str = LOOPBACK

    def divert(self, webhook_url: str) -> str:
        render_drill_alertmanager(
            self.source / "alertmanager.yml", self.folder / "alertmanager.yml", webhook_url
        )
        render_drill_rules(self.source / "alerts.yml", self.folder / "alerts.yml")
        self._reload(webhook_url)
        timing = ", ".join(f"{k} {v}" for k, v in DRILL_ROUTE_TIMING.items())
        return (
            f"drill configuration: every alert rule's `for` set to {DRILL_HOLD} and every range "
            f"window and offset longer than {DRILL_WINDOW} set to {DRILL_WINDOW} (evaluated "
            f"every {SCRAPE_INTERVAL}); Alertmanager's routes and inhibition as written with "
            f"{timing}, and every receiver a webhook at {webhook_url}/<receiver>"
        )

    def restore(self) -> None:
        render_alertmanager(self.source / "alertmanager.yml", self.folder / "alertmanager.yml")
        render_rules(self.source / "alerts.yml", self.folder / "alerts.yml")
        self._reload(None)

    def _reload(self, webhook_url: str | None) -> None:
        self.reload()
        drill = webhook_url is not None
        if until(
            lambda: self._alertmanager_serves(webhook_url) and self._prometheus_holds(drill),
            RELOAD_TIMEOUT_S,
        ):
            return
        raise TargetUnavailable(
            f"Prometheus or Alertmanager did not load the "
            f"{'drill' if webhook_url else 'restored'} configuration within "
            f"{RELOAD_TIMEOUT_S:g} s (see {self.logs})"
        )

    def _alertmanager_serves(self, webhook_url: str | None) -> bool:
        try:
            status = _get_json(f"{self.alertmanager_url}/api/v2/status")
            original = str(status["config"]["original"])
        except (OSError, ValueError, KeyError):
            return False
        return (webhook_url in original) if webhook_url else ("webhook_configs" not in original)

    def _prometheus_holds(self, drill: bool) -> bool:
        """Whether the alert rules Prometheus evaluates now have the drill's `for` (or, after a
        restore, none has it)."""
        try:
            groups = _get_json(f"{self.prometheus_url}/api/v1/rules?type=alert")["data"]["groups"]
        except (OSError, ValueError, KeyError):
            return False
        held = [
            rule.get("duration") == _duration_s(DRILL_HOLD)
            for group in groups
            for rule in group.get("rules", [])
            if rule.get("duration")
        ]
        return bool(held) and all(held) if drill else not any(held)
