"""The central log store's probes (checks/monitoring/test_logs.py) against the native target and
deliberately broken variants of it: every component's event reaches the store; an edge that
does not ship, or an API that writes no audit record of an export, turns its item red and the
reason names what is missing; a target that names no store skips the item, saying why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.targets.base import Edge, TargetInfo
from preflight.targets.native import NativeTestOptions
from tests.checks.support import REPO, apply_edits, edge_templates, failing, native, outcomes, probe

LOGS = "monitoring/test_logs.py"


def test_every_component_of_the_native_target_ships_to_the_central_store() -> None:
    with native() as info:
        decided = outcomes(probe(info, LOGS, items={"MON-LOG-CENTRAL", "MON-AUDIT-LOG"}))
    assert decided["MON-LOG-CENTRAL"][0] is Outcome.PASS, decided["MON-LOG-CENTRAL"]
    assert decided["MON-AUDIT-LOG"][0] is Outcome.PASS, decided["MON-AUDIT-LOG"]


def no_syslog(text: str) -> str:
    """nginx.conf.j2 without its syslog directives (the local files only)."""
    return "\n".join(line for line in text.splitlines() if "syslog:server=" not in line) + "\n"


@pytest.mark.turns_red(
    "MON-LOG-CENTRAL",
    defect="NGINX logs only to its local files: the access_log and error_log directives that "
    "ship to the central store over syslog are removed",
)
def test_an_edge_that_does_not_ship_its_logs_fails_naming_the_edge(tmp_path: Path) -> None:
    templates = edge_templates(tmp_path, {"nginx.conf.j2": no_syslog})
    with native(test=NativeTestOptions(edge_template_dir=templates)) as info:
        red = failing(probe(info, LOGS, items={"MON-LOG-CENTRAL"}))
    assert "MON-LOG-CENTRAL" in red, red
    assert "nothing arrived from edge" in red["MON-LOG-CENTRAL"], red["MON-LOG-CENTRAL"]
    assert "api" not in red["MON-LOG-CENTRAL"].split("nothing arrived from", 1)[1]


def without_export_audit(tmp: Path) -> Path:
    """A copy of the chatsdk package whose data export writes no audit record, to put first on
    the workers' PYTHONPATH."""
    release = tmp / "release"
    shutil.copytree(REPO / "system" / "chatsdk", release / "chatsdk")
    call = 'audit("user.export", f"user:{user.user_id}", user.user_id, app_id=user.app_id)'
    apply_edits(release, {"chatsdk/gdpr.py": lambda text: text.replace(call, "pass", 1)})
    return release


@pytest.mark.turns_red(
    "MON-AUDIT-LOG",
    defect="the API's data export (GET /v1/me/export) writes no audit record",
)
def test_an_export_without_an_audit_record_fails_the_audit_item(tmp_path: Path) -> None:
    release = without_export_audit(tmp_path)
    with native(worker_env={"PYTHONPATH": str(release)}) as info:
        red = failing(probe(info, LOGS, items={"MON-AUDIT-LOG"}))
    assert "MON-AUDIT-LOG" in red, red
    assert "user.export" in red["MON-AUDIT-LOG"], red["MON-AUDIT-LOG"]


def test_a_target_that_names_no_log_store_skips_the_item_saying_why() -> None:
    """A target file cannot name a central log store: the item is not decided there."""
    external = TargetInfo("staging", "external", Edge("https://127.0.0.1:9"), admin_key="unused")
    results = probe(external, LOGS, items={"MON-LOG-CENTRAL"})
    outcome, reason = outcomes(results)["MON-LOG-CENTRAL"]
    assert outcome is Outcome.SKIP, (outcome, reason)
    central = [r for r in results.results if "central_store" in r.nodeid]
    assert [r.outcome for r in central] == [Outcome.SKIP], central
    assert "a target file cannot name one yet" in central[0].message, central[0].message
