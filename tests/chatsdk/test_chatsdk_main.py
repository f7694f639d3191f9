from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from preflight.targets.procs import free_port

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


def start_worker(extra: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "chatsdk"],
            env=clean_environ(extra),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def log_messages(log_path: Path) -> list[str]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [str(line["msg"]) for line in lines]


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_a_starting_worker_opens_its_port_once_it_can_serve(
    env: dict[str, str], tmp_path: Path, unused_port: int
) -> None:
    """An edge without health checks sends requests to whatever listens: the first answer a
    starting worker gives is ready, never a 503 while it still connects."""
    base = f"http://127.0.0.1:{unused_port}"
    log_path = tmp_path / "stderr.log"
    process = start_worker(
        {**env, "CHATSDK_PORT": str(unused_port), "CHATSDK_STARTUP_WAIT": "10"}, log_path
    )
    try:
        first: tuple[int, dict[str, Any]] | None = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline and process.poll() is None:
            try:
                first = get(f"{base}/v1/health/ready")
            except OSError:
                time.sleep(0.02)
    finally:
        stop_worker(process)
    assert first is not None, log_path.read_text()
    assert first[0] == 200, f"the first readiness answer must be 200 (got {first})"
    messages = log_messages(log_path)
    assert "databases ready" in messages, messages
    assert messages.index("databases ready") < messages.index("listening"), messages


def test_a_worker_whose_database_is_down_listens_after_the_startup_wait(
    env: dict[str, str], tmp_path: Path, unused_port: int
) -> None:
    """It waits for its database, bounded: then it listens, live and not ready, so liveness
    probes do not restart it in a loop during an outage."""
    closed = free_port()
    base = f"http://127.0.0.1:{unused_port}"
    log_path = tmp_path / "stderr.log"
    extra = {
        **env,
        "CHATSDK_PORT": str(unused_port),
        "CHATSDK_STARTUP_WAIT": "5",
        "CHATSDK_DATABASE_URL": f"postgresql://chatsdk@127.0.0.1:{closed}/chatsdk",
    }
    process = start_worker(extra, log_path)
    try:
        deadline = time.monotonic() + 20
        while not any(m.startswith("database not reachable yet") for m in log_messages(log_path)):
            assert time.monotonic() < deadline, log_path.read_text()
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.05)
        waiting_refused = refuses(unused_port)
        wait_until(f"{base}/v1/health/live", 200, within=20)
        ready = get(f"{base}/v1/health/ready")
    finally:
        stop_worker(process)
    assert waiting_refused, "the port must stay closed while the worker waits for its database"
    assert ready[0] == 503, ready
    assert ready[1]["checks"]["database"] == "unavailable", ready
    messages = log_messages(log_path)
    assert "databases not ready; listening anyway" in messages, messages
    assert messages.index("databases not ready; listening anyway") < messages.index("listening"), (
        messages
    )


def test_the_quit_on_sigterm_fault_exits_0_without_draining(
    env: dict[str, str], tmp_path: Path, unused_port: int
) -> None:
    """The test-only fault the drills' variant tests seed: a clean exit code, no drain."""
    base = f"http://127.0.0.1:{unused_port}"
    log_path = tmp_path / "stderr.log"
    extra = {
        **env,
        "CHATSDK_PORT": str(unused_port),
        "CHATSDK_DRAIN_DELAY": str(DRAIN_DELAY),
        "CHATSDK_FAULTS": "quit_on_sigterm",
    }
    process = start_worker(extra, log_path)
    try:
        wait_until(f"{base}/v1/health/ready", 200, within=15)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=15)
    finally:
        stop_worker(process)
    assert returncode == 0
    assert "draining" not in log_messages(log_path)
