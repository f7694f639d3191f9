"""Choosing a target from neutral options, and what each kind says it can do before it runs;
nothing is started here (tests/targets/test_native.py asks a running one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight.errors import TargetUnavailable
from preflight.probe.target import ProbeTarget
from preflight.targets import TargetOptions, select_target
from preflight.targets.base import Backups, Edge, Observability, TargetInfo, offered
from preflight.targets.containers import ContainersTarget
from preflight.targets.external import ExternalTarget
from preflight.targets.native import NativeOptions, NativeTarget


def log(_message: str) -> None:
    return None


def test_neutral_options_reach_the_native_target() -> None:
    options = TargetOptions(
        workers=3, edge_port=8443, http_port=8080, observability=True, backups=True, log=log
    )
    selection, target = select_target("native", options)
    assert selection.kind == "native"
    assert isinstance(target, NativeTarget)
    assert target.options == NativeOptions(
        workers=3, edge_port=8443, http_port=8080, observability=True, backups=True, log=log
    )


def test_a_target_file_is_an_external_target_that_cannot_restore(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: x\n")
    selection, target = select_target(str(path), TargetOptions(workers=5))
    assert (selection.kind, selection.path) == ("external", path)
    assert isinstance(target, ExternalTarget)
    assert target.capabilities == frozenset()  # nothing is known before it runs
    assert list(target.crashed()) == []
    with pytest.raises(TargetUnavailable, match="external target cannot restore"):
        target.restore(tmp_path / "20260101T000000Z")
    with pytest.raises(TargetUnavailable, match="not running"):
        target.describe()


def test_the_containers_target_restores_into_a_new_deployment_and_supervises_nothing() -> None:
    target = ContainersTarget(timeout=42)
    assert target.capabilities == frozenset({"restore"})  # the rest once it runs
    assert list(target.crashed()) == []
    restored = target.restore(Path("/backups/20260101T000000Z-abc"))
    assert restored.restore_from == Path("/backups/20260101T000000Z-abc")
    assert (restored.timeout, restored.compose_path) == (42, target.compose_path)
    assert restored.run != target.run


def test_the_native_target_supervises_and_restores_before_it_runs() -> None:
    assert NativeTarget().capabilities == {"restore", "supervisor"}


def test_a_restore_is_a_new_native_system_like_this_one(tmp_path: Path) -> None:
    backup = tmp_path / "20260101T000000Z"
    source = NativeTarget(
        NativeOptions(workers=3, pg_bin=tmp_path, observability=True, backups=True, log=log)
    )
    restored = source.restore(backup)
    assert isinstance(restored, NativeTarget)
    assert restored.restore_report is None  # not entered yet
    assert restored.options == NativeOptions(
        workers=3, pg_bin=tmp_path, restore_from=backup, log=log
    )


def test_capabilities_follow_what_the_info_gives() -> None:
    bare = TargetInfo(name="t", kind="external", edge=Edge("https://t"), admin_key="k")
    assert offered(bare) == frozenset()
    assert offered(None) == frozenset()
    rich = TargetInfo(
        name="t",
        kind="external",
        edge=Edge("https://t"),
        admin_key="k",
        observability=Observability(
            metrics_urls=("http://t:8080/metrics",),
            log_files=(Path("/var/log/api.log"),),
            prometheus_url="http://t:9090",
            error_events=Path("/events.jsonl"),
        ),
        backups=Backups(dir=Path("/backups")),
    )
    assert offered(rich) == {"metrics", "logs", "observability", "backups", "error_tracking"}


def test_without_partitions_the_partition_drills_skip_naming_the_capability() -> None:
    """Native and target files cannot cut the network between the API and a store: the drills
    that need it skip, saying which capability is missing and which target has it."""
    info = TargetInfo(name="native", kind="native", edge=Edge("https://127.0.0.1:1"), admin_key="k")
    assert "partitions" not in offered(info)
    with pytest.raises(pytest.skip.Exception, match=r"`partitions`: only --target containers"):
        ProbeTarget(info).partitions()
