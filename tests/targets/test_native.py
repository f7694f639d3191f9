"""The native target, for real: PostgreSQL, Redis, API workers and NGINX as child processes."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis

from preflight.errors import EdgeConfigInvalid, PreflightError, TargetUnavailable
from preflight.targets.base import TargetInfo
from preflight.targets.external import ExternalTarget, load_target_file
from preflight.targets.native import TEMP_PREFIX, NativeOptions, NativeTarget, sweep_stale_dirs

pytestmark = pytest.mark.native

SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
)


@pytest.fixture(scope="module")
def stack() -> Iterator[NativeTarget]:
    target = NativeTarget(NativeOptions(workers=2))
    with target:
        yield target


@pytest.fixture(scope="module")
def info(stack: NativeTarget) -> TargetInfo:
    assert stack.info is not None
    return stack.info


def https(info: TargetInfo, timeout: float = 10) -> http.client.HTTPSConnection:
    url = urlsplit(info.edge.url)
    ctx = ssl.create_default_context(cafile=str(info.edge.ca_file))
    return http.client.HTTPSConnection(url.hostname or "", url.port, context=ctx, timeout=timeout)


def get(
    info: TargetInfo, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = https(info)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and str(os.getpid()) != entry.name:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def api_logs(stack: NativeTarget) -> str:
    assert stack.dir is not None
    return "".join(p.read_text() for p in (stack.dir / "logs").glob("api-*.log"))


def test_edge_answers_ready_over_tls_with_the_generated_ca(
    stack: NativeTarget, info: TargetInfo
) -> None:
    status, _headers, body = get(info, "/v1/health/ready")
    assert status == 200, body
    checks = json.loads(body)["checks"]
    assert checks == {"database": "ok", "redis": "ok", "migrations": "ok"}
    assert stack.started_in is not None
    assert info.edge.url.startswith("https://127.0.0.1:")


def test_the_target_says_what_it_can_do_and_what_runs(
    stack: NativeTarget, info: TargetInfo
) -> None:
    assert stack.capabilities >= {
        "control",
        "restore",
        "supervisor",
        "metrics",
        "logs",
        "releases",
        "jobs",
        "backups",
        "error_tracking",
        "processes",
        "log_store",
    }
    assert "observability" not in stack.capabilities  # off unless asked for
    assert "alert_routing" not in stack.capabilities
    assert "partitions" not in stack.capabilities  # only the containers target cuts networks
    described = stack.describe()
    assert (described.name, described.kind, described.edge_url) == (
        "native",
        "native",
        info.edge.url,
    )
    assert {"python", "preflight", "postgresql", "redis", "nginx"} <= set(described.versions)
    assert not [v for v in described.versions.values() if v.startswith("unknown")]
    assert {"edge/nginx/nginx.conf", "redis/redis.conf"} <= set(described.config_digests)
    assert described.to_json()["config_digests"] == dict(described.config_digests)


def test_the_certificate_is_refused_without_the_ca(info: TargetInfo) -> None:
    url = urlsplit(info.edge.url)
    conn = http.client.HTTPSConnection(
        url.hostname or "", url.port, context=ssl.create_default_context(), timeout=5
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/v1/health/live")
    conn.close()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/health/live", 200), ("/v1/no-such-route", 404), ("/metrics", 404)],
)
def test_security_headers_on_success_and_errors(info: TargetInfo, path: str, status: int) -> None:
    got, headers, _ = get(info, path)
    assert got == status
    missing = [h for h in SECURITY_HEADERS if h not in headers]
    assert not missing, f"{path} ({got}) lacks {missing}"
    assert "nginx/" not in headers.get("Server", ""), "Server header must not carry a version"
    assert "max-age=" in headers["Strict-Transport-Security"]
    max_age = int(headers["Strict-Transport-Security"].split("max-age=")[1].split(";")[0])
    assert max_age >= 31536000
    assert "includeSubDomains" in headers["Strict-Transport-Security"]


def test_metrics_are_internal_only(stack: NativeTarget, info: TargetInfo) -> None:
    status, _, body = get(info, "/metrics")
    assert status == 404
    assert b"http_requests_total" not in body
    # ...while the workers do serve them on their private port.
    env = stack.supervisor.start_args["api-0"][0]
    assert env is not None
    conn = http.client.HTTPConnection("127.0.0.1", int(env["CHATSDK_PORT"]), timeout=5)
    conn.request("GET", "/metrics")
    assert b"http_requests_total" in conn.getresponse().read()
    conn.close()


def test_plain_http_redirects_browsers_and_refuses_the_api(info: TargetInfo) -> None:
    assert info.edge.http_url is not None
    url = urlsplit(info.edge.http_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    conn.request("GET", "/some/page?x=1")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 301
    assert resp.getheader("Location") == f"{info.edge.url}/some/page?x=1"
    conn.request("POST", "/v1/apps", body=b"{}", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 403
    assert body["error"]["code"] == "https_required"
    conn.close()


def test_body_over_100_mb_is_refused_by_the_edge_before_the_api(
    stack: NativeTarget, info: TargetInfo
) -> None:
    big_id, small_id = f"big-{time.time_ns()}", f"small-{time.time_ns()}"
    conn = https(info)
    conn.putrequest("POST", "/v1/uploads")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(100 * 1024 * 1024 + 1))
    conn.putheader("X-Request-ID", big_id)
    conn.endheaders()
    conn.send(b"x" * 65536)  # a start of the body; the edge answers on the header alone
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 413
    assert "Strict-Transport-Security" in dict(resp.getheaders())
    # A small request with its own id does reach a worker: the log is where we look.
    conn = https(info)
    conn.request("POST", "/v1/uploads", body=b"x" * 10, headers={"X-Request-ID": small_id})
    conn.getresponse().read()
    conn.close()
    deadline = time.monotonic() + 5
    while small_id not in api_logs(stack) and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = api_logs(stack)
    assert small_id in logs, "the control request must appear in the API log"
    assert big_id not in logs, "the API must never see a request over the body limit"


def test_drain_on_sigterm_then_start_again(stack: NativeTarget, info: TargetInfo) -> None:
    child = next(c for c in stack.children if c.name == "api-1")
    env = stack.supervisor.start_args["api-1"][0]
    assert env is not None
    port = int(env["CHATSDK_PORT"])
    t0 = time.monotonic()
    child.signal(signal.SIGTERM)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    conn.request("GET", "/v1/health/ready")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 503
    assert resp.getheader("Retry-After")
    assert "draining" in json.dumps(body)
    # The edge keeps serving while this one drains (the draining worker fails only its own
    # readiness; API requests still find an answer, from either worker).
    assert [get(info, "/v1/openapi.json")[0] for _ in range(4)] == [200] * 4
    assert child.proc is not None
    assert child.proc.wait(timeout=15) == 0
    assert time.monotonic() - t0 < 15
    info.drills.control["api-1"].start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            c.request("GET", "/v1/health/ready")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        finally:
            c.close()
        time.sleep(0.1)
    else:
        pytest.fail("api-1 did not become ready again after start")
    assert not stack.crashed()


def _server_line(stack: NativeTarget, worker: str) -> str:
    env = stack.supervisor.start_args[worker][0]
    assert env is not None
    return f"server 127.0.0.1:{env['CHATSDK_PORT']} max_fails=3 fail_timeout=2s"


def _edge_conf(stack: NativeTarget) -> Path:
    return next(p for p in Path(str(stack.dir)).rglob("nginx.conf"))


def _ready(worker_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{worker_url}/v1/health/ready", timeout=1) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_graceful_stop_leaves_the_edge_alone(stack: NativeTarget, info: TargetInfo) -> None:
    """Nothing takes a stopping worker out of the edge: the rendered configuration is the same
    before, during and after a stop and a start, and the edge answers every request meanwhile
    (the other worker serves; refused connects go to it)."""
    conf = _edge_conf(stack)
    rendered = conf.read_bytes()
    assert _server_line(stack, "api-1") + ";" in rendered.decode()
    worker = info.drills.control["api-1"]
    assert worker.stop() == 0
    try:
        assert conf.read_bytes() == rendered
        assert [get(info, "/v1/openapi.json")[0] for _ in range(10)] == [200] * 10
    finally:
        worker.start()
    assert _until(lambda: _ready(stack.worker_urls[1]), 30)
    assert conf.read_bytes() == rendered
    assert not stack.crashed()


def test_a_crashed_component_is_reported_with_its_log(
    stack: NativeTarget, info: TargetInfo
) -> None:
    redis_child = next(c for c in stack.children if c.name == "redis")
    os.kill(redis_child.pid, signal.SIGKILL)
    assert redis_child.proc is not None
    redis_child.proc.wait(timeout=5)
    crashed = stack.crashed()
    assert [c.name for c in crashed] == ["redis"]
    message = crashed[0].crashed_message()
    assert "signal SIGKILL" in message
    assert "redis.log" in message
    info.drills.control["redis"].start()
    assert info.stores.redis_url is not None
    client = redis.Redis.from_url(info.stores.redis_url, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    assert not stack.crashed()
    deadline = time.monotonic() + 15
    while get(info, "/v1/health/ready")[0] != 200:
        assert time.monotonic() < deadline, "readiness did not recover after Redis came back"
        time.sleep(0.2)


def test_redis_needs_its_password(info: TargetInfo) -> None:
    assert info.stores.redis_url is not None
    port = urlsplit(info.stores.redis_url).port or 6379
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    client.close()


def test_postgres_takes_tcp_only_over_verified_tls(info: TargetInfo) -> None:
    assert info.stores.postgres_dsn is not None
    query = dict(p.split("=", 1) for p in urlsplit(info.stores.postgres_dsn).query.split("&"))
    assert query["sslmode"] == "verify-full"
    assert Path(query["sslrootcert"]) == info.edge.ca_file

    async def connect(dsn: str) -> bool:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return bool(
                await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
        finally:
            await conn.close(timeout=10)

    assert asyncio.run(connect(info.stores.postgres_dsn)) is True
    plaintext = info.stores.postgres_dsn.split("?", 1)[0] + "?sslmode=disable"
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        asyncio.run(connect(plaintext))


def test_past_the_rate_limit_the_edge_answers_429_with_retry_after(info: TargetInfo) -> None:
    """Runs last in this module: it empties this client's bucket."""

    def one(_: int) -> tuple[int, str | None, bool]:
        conn = https(info)
        try:
            conn.request("GET", "/v1/health/live")
            resp = conn.getresponse()
            resp.read()
            return (
                resp.status,
                resp.getheader("Retry-After"),
                bool(resp.getheader("Strict-Transport-Security")),
            )
        finally:
            conn.close()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(600)))
    statuses = [s for s, _, _ in results]
    limited = [r for r in results if r[0] == 429]
    assert statuses.count(200) > 0
    assert limited, f"600 requests in a burst never met the limit: {set(statuses)}"
    assert all(ra is not None and ra.isdigit() for _, ra, _ in limited)
    assert all(hsts for _, _, hsts in limited)
    assert 503 not in statuses
    time.sleep(2)  # let the bucket refill for whatever runs next


def test_stop_leaves_no_process_and_no_temp_dir() -> None:
    target = NativeTarget(NativeOptions(workers=1))
    with target:
        assert target.dir is not None
        d = target.dir
        pids = target.pids()
        # redis, errortracker, api-0, nginx, postgres, postgres-standby, postgres-sync-guard,
        # logstore, log-shipper
        assert len(pids) == 9
        assert processes_mentioning(str(d))
    assert not d.exists()
    assert not processes_mentioning(str(d)), "processes outlived the target"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_port_in_use_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        tmp = Path(tempfile.gettempdir())
        before = set(tmp.glob(f"{TEMP_PREFIX}*"))
        with (
            pytest.raises(TargetUnavailable, match=rf"{port} is already in use.*--edge-port"),
            NativeTarget(NativeOptions(workers=1, edge_port=port)),
        ):
            pass
        assert set(tmp.glob(f"{TEMP_PREFIX}*")) == before


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    with (
        pytest.raises(TargetUnavailable, match=r"initdb not found.*apt-get install postgresql-15"),
        NativeTarget(NativeOptions(workers=1, pg_bin=tmp_path)),
    ):
        pass
    with pytest.raises(PreflightError, match="at least 1"), NativeTarget(NativeOptions(workers=0)):
        pass


def _start_up(extra: list[str], target_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preflight.cli",
            "up",
            "--target",
            "native",
            "--workers",
            "1",
            "--write-target",
            str(target_file),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"preflight up exited {proc.returncode}: {err}")
        assert time.monotonic() < deadline, "preflight up did not write its target file"
        time.sleep(0.05)


def test_up_writes_a_target_file_another_process_can_use(tmp_path: Path) -> None:
    target_file = tmp_path / "t.yaml"
    proc = _start_up([], target_file)
    try:
        _wait_for_file(target_file, proc)
        # Another process (this one) reaches the system through the file alone.
        external = ExternalTarget(target_file)
        with external as info:
            status, headers, _ = get(info, "/v1/health/ready")
            assert status == 200
            assert headers["Strict-Transport-Security"]
            assert {"metrics", "logs", "error_tracking"} <= external.capabilities
            assert not {"restore", "supervisor", "control"} & external.capabilities
            described = external.describe()
            assert described.kind == "external"
            assert "postgresql" in described.versions
            assert "nginx" not in described.versions
            assert described.config_digests == {}  # its files are not ours to read
        assert load_target_file(target_file).stores.postgres_dsn
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "native target ready in" in out
    assert "admin key" in out
    assert not target_file.exists(), "the target file must not outlive the target"


def _worker_pid(info: TargetInfo) -> int | None:
    """The pid the only API worker reports through the edge (None while none answers)."""
    try:
        status, _, body = get(info, "/v1/admin/runtime", {"X-Admin-Key": info.admin_key})
    except OSError:
        return None
    return int(json.loads(body)["pid"]) if status == 200 else None


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_up_restarts_a_worker_killed_from_outside_and_keeps_running(tmp_path: Path) -> None:
    """`kill -9` of a worker, as the OOM killer would: the launcher restarts it and stays up;
    stopped, it leaves nothing running."""
    target_file = tmp_path / "t.yaml"
    proc = _start_up([], target_file)
    try:
        _wait_for_file(target_file, proc)
        with ExternalTarget(target_file) as info:
            first = _worker_pid(info)
            assert first is not None
            os.kill(first, signal.SIGKILL)
            assert _until(lambda: _worker_pid(info) not in (None, first), 30)
            second = _worker_pid(info)
        assert second is not None
        assert proc.poll() is None, "preflight up must survive the kill of a worker"
        assert info.edge.ca_file is not None
        tempdir = info.edge.ca_file.parent.parent
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"api-0 (pid {first}) exited unasked with signal SIGKILL" in err
    assert f"api-0 restarted (pid {first} -> {second}), restart 1" in err
    assert "stopping everything" not in err
    assert not _alive(first)
    assert not _alive(second)
    assert not processes_mentioning(str(tempdir))
    assert not tempdir.exists()


def test_killing_the_launcher_takes_every_child_with_it(tmp_path: Path) -> None:
    target_file = tmp_path / "t.yaml"
    proc = _start_up([], target_file)
    try:
        _wait_for_file(target_file, proc)
        info = load_target_file(target_file)
        assert info.edge.ca_file is not None
        tempdir = info.edge.ca_file.parent.parent
        assert processes_mentioning(str(tempdir))
        proc.kill()  # SIGKILL: the launcher gets no chance to clean up
        proc.wait(timeout=5)
        deadline = time.monotonic() + 20
        while processes_mentioning(str(tempdir)):
            assert time.monotonic() < deadline, processes_mentioning(str(tempdir))
            time.sleep(0.1)
        # Its temp dir is left behind, and the next start sweeps it.
        assert tempdir.exists()
        assert tempdir in sweep_stale_dirs()
        assert not tempdir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_a_start_that_fails_midway_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """initdb, Redis and the workers are already running when the edge config is rendered."""
    from preflight.targets.native import nginx  # noqa: PLC0415

    def broken(_cfg: object, template_dir: Path | None = None) -> Path:
        raise EdgeConfigInvalid("edge template broken on purpose")

    monkeypatch.setattr(nginx, "render_edge", broken)
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob(f"{TEMP_PREFIX}*"))
    target = NativeTarget(NativeOptions(workers=1))
    with pytest.raises(EdgeConfigInvalid), target:
        pass
    time.sleep(0.5)  # an initdb left running would re-create its dir by now
    assert set(tmp.glob(f"{TEMP_PREFIX}*")) == before
    assert not target.children
