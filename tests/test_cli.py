"""The `preflight` command: exit codes and messages for bad input."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from preflight.checklist import load_checklist
from preflight.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "preflight.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_explains_up() -> None:
    result = run_cli("up", "--help")
    assert result.returncode == 0
    for option in ("--workers", "--write-target", "--edge-port", "--check", "--target"):
        assert option in result.stdout


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["up", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_an_unknown_area_names_the_choices_and_the_nearest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--area", "security,securty"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown area 'securty'; did you mean security?" in err
    assert "(one of: infrastructure, security, application," in err
    assert "('" not in err


def test_a_port_in_use_exits_2_naming_the_port_and_leaves_nothing() -> None:
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("preflight-native-*"))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_cli("up", "--target", "native", "--edge-port", str(port), "--check")
    assert result.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "--edge-port" in result.stderr
    assert set(tmp.glob("preflight-native-*")) == before


def test_check_verifies_the_edge_and_stops(tmp_path: Path) -> None:
    result = run_cli("up", "--target", "native", "--workers", "1", "--check")
    assert result.returncode == 0, result.stderr
    assert "native target ready in" in result.stdout
    assert "READY - GET https://127.0.0.1:" in result.stdout
    assert "over TLSv1.3: 200" in result.stdout


def test_checklist_show_names_the_tests_that_decide_each_item(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["checklist", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    decided = decided_by(lines)
    hsts = decided["SEC-HDR-HSTS"]
    assert any(t.startswith("checks/security/test_headers.py::") for t in hsts), hsts
    assert any(t.startswith("checks/infrastructure/test_k8s.py::") for t in hsts), hsts
    assert any(t.endswith(" cases)") for t in hsts), "a parametrized test is one line"
    manual = next(i for i in load_checklist(REPO / "checklist.yaml").items if i.verify == "manual")
    assert decided[manual.id] == [f"a signed attestation from {manual.owner}"]
    assert ["no test yet (unverified)"] not in decided.values()
    assert lines[-1].endswith("probe items have a test")


def decided_by(lines: list[str]) -> dict[str, list[str]]:
    """Item id -> its `decided by:` lines, from `checklist show`'s output."""
    found: dict[str, list[str]] = {}
    item = ""
    for line in lines:
        if not line.startswith(" "):
            item = line.split()[0]
        elif line.startswith("    decided by: "):
            found.setdefault(item, []).append(line.removeprefix("    decided by: "))
    return found


def test_checklist_show_keeps_the_collection_until_a_probe_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checks = tmp_path / "checks"
    checks.mkdir()
    probe = checks / "test_hsts.py"
    probe.write_text(
        'import pytest\n\n\n@pytest.mark.checklist("SEC-HDR-HSTS")\ndef test_x():\n    pass\n'
    )
    args = ["checklist", "show", str(REPO / "checklist.yaml"), "SEC-HDR-HSTS", "--checks"]
    assert main([*args, str(checks)]) == 0
    assert decided_by(capsys.readouterr().out.splitlines())["SEC-HDR-HSTS"] == [
        "test_hsts.py::test_x"
    ]
    assert len(list((tmp_path / "cache/preflight").iterdir())) == 1

    def no_collection(*_: object) -> None:
        raise AssertionError("the second listing must read the kept collection")

    monkeypatch.setattr("preflight.plugin.collect_probes", no_collection)
    assert main([*args, str(checks)]) == 0
    assert "test_hsts.py::test_x" in capsys.readouterr().out
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    probe.write_text(probe.read_text().replace("test_x", "test_y"))
    assert main([*args, str(checks)]) == 0
    assert decided_by(capsys.readouterr().out.splitlines())["SEC-HDR-HSTS"] == [
        "test_hsts.py::test_y"
    ]


def test_checklist_show_names_the_items_without_a_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_hsts.py").write_text(
        'import pytest\n\n\n@pytest.mark.checklist("SEC-HDR-HSTS")\ndef test_x():\n    pass\n'
    )
    args = ["checklist", "show", str(REPO / "checklist.yaml"), "--checks", str(checks)]
    assert main(args) == 0
    decided = decided_by(capsys.readouterr().out.splitlines())
    assert decided["SEC-HDR-HSTS"] == ["test_hsts.py::test_x"]
    assert decided["SEC-HDR-CSP"] == ["no test yet (unverified)"]


def test_checklist_show_id_lists_the_broken_systems_shown_to_turn_it_red(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["checklist", "show", "SEC-CORS", "INF-RES-MEM"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # In checklist order, whatever the order asked.
    assert [line.split()[0] for line in lines if not line.startswith(" ")][1:3] == [
        "INF-RES-MEM",
        "SEC-CORS",
    ]
    shown = [line.strip() for line in lines if line.startswith("    shown able to fail by: ")]
    cors = (
        "tests/checks/test_edge_variants.py::test_edge_defects_turn_exactly_their_items_red"
        "[cors-reflects-rate-limit-dry-run-body-limit-raised-no-cache-policy-metrics-exposed]"
    )
    assert shown == [
        "shown able to fail by: no red-variant test yet",
        "shown able to fail by: An edge that reflects any Origin with credentials, runs its rate "
        f"limit dry, accepts 1 GB bodies, sends no Cache-Control on the API and proxies /metrics "
        f"to the workers. ({cors})",
    ]
    assert lines[-1].startswith("2 of ")


def test_checklist_show_refuses_an_unknown_item(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checklist", "show", str(REPO / "checklist.yaml"), "NO-SUCH-ITEM"]) == 2
    assert "has no item NO-SUCH-ITEM" in capsys.readouterr().err


def test_checklist_show_refuses_probes_that_do_not_collect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_x.py").write_text(
        'import pytest\n\n\n@pytest.mark.checklist("NO-SUCH-ITEM")\ndef test_x():\n    pass\n'
    )
    code = main(["checklist", "show", str(REPO / "checklist.yaml"), "--checks", str(checks)])
    assert code == 2
    assert "NO-SUCH-ITEM" in capsys.readouterr().err


def test_every_option_and_argument_of_every_command_has_help() -> None:
    def undocumented(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, f"{path} {name}")
            elif isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            elif not action.help or action.help == argparse.SUPPRESS:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser(), "preflight")) == []
