"""What the drills put in place of the real configuration: the alert drill's rules and routes
(preflight/targets/alerting.py) and the rollout rehearsal's candidate release
(preflight/targets/native/releases.py). Rendered from the repository's own files; no process
runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from preflight.targets.alerting import (
    DRILL_HOLD,
    DRILL_ROUTE_TIMING,
    DRILL_WINDOW,
    render_drill_alertmanager,
    render_drill_rules,
)
from preflight.targets.native.observability import MONITORING_DIR
from preflight.targets.native.releases import EXPAND_MIGRATION, REHEARSAL_SUFFIX, build_candidate
from tests.checks.support import REPO


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_drill_rules_shorten_for_and_long_windows_only(tmp_path: Path) -> None:
    out = tmp_path / "alerts.yml"
    render_drill_rules(MONITORING_DIR / "alerts.yml", out)
    original = [r for g in _load(MONITORING_DIR / "alerts.yml")["groups"] for r in g["rules"]]
    drill = [r for g in _load(out)["groups"] for r in g["rules"]]
    assert len(drill) == len(original)
    for before, rule in zip(original, drill, strict=True):
        name = rule.get("alert") or rule.get("record")
        if "for" in before:
            assert rule["for"] == DRILL_HOLD, name
        assert "[5m]" not in rule["expr"], name
        assert "[1h]" not in rule["expr"], name
        assert rule.get("labels") == before.get("labels"), name
        assert "offset 10m" not in rule["expr"], name
    high = next(r for r in drill if r.get("alert") == "HighErrorRate")
    assert f"[{DRILL_WINDOW}]" in high["expr"]
    down = next(r for r in drill if r.get("alert") == "APIServiceDown")
    assert f"offset {DRILL_WINDOW})" in down["expr"]


def test_drill_routes_keep_matchers_and_inhibition_and_deliver_to_the_webhook(
    tmp_path: Path,
) -> None:
    out = tmp_path / "alertmanager.yml"
    render_drill_alertmanager(MONITORING_DIR / "alertmanager.yml", out, "http://127.0.0.1:9")
    original, drill = _load(MONITORING_DIR / "alertmanager.yml"), _load(out)
    assert drill["inhibit_rules"] == original["inhibit_rules"]
    assert [r["matchers"] for r in drill["route"]["routes"]] == [
        r["matchers"] for r in original["route"]["routes"]
    ]
    for key, value in DRILL_ROUTE_TIMING.items():
        assert drill["route"][key] == value
    assert {r["name"]: r["webhook_configs"][0]["url"] for r in drill["receivers"]} == {
        r["name"]: f"http://127.0.0.1:9/{r['name']}" for r in original["receivers"]
    }
    assert not any(k.startswith("smtp_") for k in drill["global"])


def test_the_rehearsal_candidate_is_this_release_with_one_more_migration(tmp_path: Path) -> None:
    release = build_candidate(tmp_path)
    package = release / "chatsdk"
    shipped = sorted(p.name for p in (REPO / "system" / "chatsdk" / "migrations").glob("*.sql"))
    copied = sorted(p.name for p in (package / "migrations").glob("*.sql"))
    assert copied[:-1] == shipped
    assert copied[-1] == f"{int(shipped[-1][:4]) + 1:04d}_rehearsal.sql"
    assert (package / "migrations" / copied[-1]).read_text() == EXPAND_MIGRATION
    assert REHEARSAL_SUFFIX + '"' in (package / "version.py").read_text()
    assert not list(package.rglob("__pycache__"))
