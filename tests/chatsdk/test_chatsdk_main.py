from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

DRAIN_DELAY = 1.5


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - http://127.0.0.1 only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def wait_until(url: str, status: int, within: float) -> dict[str, Any]:
    __tracebackhide__ = True
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            code, body = get(url)
        except OSError as exc:
            last = exc
        else:
            if code == status:
                return body
            last = (code, body)
        time.sleep(0.05)
    pytest.fail(f"{url} must answer {status} within {within} s (last got {last})")


def clean_environ(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATSDK_")}
    return {**env, **extra}


def test_sigterm_drains_then_exits_0_within_15_s(
    env: dict[str, str], tmp_path: Path, unused_port: int
) -> None:
    port = unused_port
    extra = {
        **env,
        "CHATSDK_PORT": str(port),
        "CHATSDK_DRAIN_DELAY": str(DRAIN_DELAY),
        "CHATSDK_SHUTDOWN_TIMEOUT": "5",
        "CHATSDK_WORKER_ID": "w7",
    }
    log_path = tmp_path / "stderr.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatsdk"],
            env=clean_environ(extra),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(f"{base}/v1/health/ready", 200, within=15)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status, body = get(f"{base}/v1/health/ready")
        answered_in = time.monotonic() - signalled
        assert answered_in < DRAIN_DELAY, "readiness must answer while the listener is open"
        assert status == 503, body
        assert body["status"] == "draining"
        assert body["error"]["code"] == "draining"
        assert get(f"{base}/v1/health/live")[0] == 200, "liveness stays up while draining"
        returncode = process.wait(timeout=15)
        elapsed = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert returncode == 0, log_path.read_text()
    assert DRAIN_DELAY <= elapsed < 15, f"drain must take the delay and end within 15 s ({elapsed})"

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    messages = [line["msg"] for line in lines]
    assert "draining" in messages
    assert "stopped" in messages
    assert messages.index("draining") < messages.index("stopped")
    assert all(line["worker_id"] == "w7" for line in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "chatsdk.access"]
    ready_lines = [line for line in access if line["path"] == "/v1/health/ready"]
    assert ready_lines, "every request must have an access line"
    assert {"method", "path", "status", "duration_ms", "request_id"} <= set(ready_lines[-1])
    assert ready_lines[-1]["status"] == 503


def test_a_settings_error_prints_one_line_naming_the_variable_and_exits_2(
    env: dict[str, str],
) -> None:
    extra = {key: value for key, value in env.items() if key != "CHATSDK_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "chatsdk"],
        env=clean_environ(extra),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "CHATSDK_DATABASE_URL" in result.stderr
