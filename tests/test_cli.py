"""The `preflight` command: exit codes and messages for bad input."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from preflight.cli import main


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
