"""The stand-in for Sentry's ingestion endpoint (preflight/targets/errortracker.py): the
envelope format, each Content-Encoding, the DSN key, a real sentry-sdk reporting to it, and the
containers target's stand-in ending with its launcher, however that ends."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from preflight.polling import until
from preflight.targets.errortracker import (
    BROTLI,
    EnvelopeError,
    ErrorTracker,
    decode_body,
    events_of,
    parse_envelope,
    read_events,
    start_error_tracker,
)
from preflight.targets.external import load_target_file, write_target_file
from preflight.targets.procs import Child

EVENT = {"event_id": "9f", "tags": {"request_id": "r1"}, "level": "error"}


def envelope(*, lengths: bool) -> bytes:
    event = json.dumps(EVENT).encode()
    session = b'{"sid":"s","status":"ok"}'
    parts = [b'{"event_id":"9f","sent_at":"2026-01-01T00:00:00Z"}']
    for kind, payload in (("event", event), ("session", session)):
        header: dict[str, object] = {"type": kind}
        if lengths:
            header["length"] = len(payload)
        parts += [json.dumps(header).encode(), payload]
    return b"\n".join(parts) + b"\n"


@pytest.mark.parametrize("lengths", [True, False])
def test_an_envelope_is_read_with_and_without_item_lengths(lengths: bool) -> None:
    header, items = parse_envelope(envelope(lengths=lengths))
    assert header["event_id"] == "9f"
    assert [item["type"] for item, _ in items] == ["event", "session"]
    assert events_of(envelope(lengths=lengths)) == [EVENT]


def test_a_payload_with_a_newline_inside_its_length_is_kept_whole() -> None:
    payload = b'{"event_id":"a",\n"level":"error"}'
    data = b"{}\n" + json.dumps({"type": "event", "length": len(payload)}).encode() + b"\n"
    assert events_of(data + payload) == [{"event_id": "a", "level": "error"}]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json\n", "envelope header"),
        (b'{}\n{"type":"event","length":99}\n{}', "declares 99 bytes"),
        (b'{}\n{"type":"event","length":-1}\n{}', "non-negative"),
        (b'{}\n{"type":"event"}\n[1]', "JSON object"),
    ],
)
def test_a_broken_envelope_is_refused_with_the_reason(data: bytes, problem: str) -> None:
    with pytest.raises(EnvelopeError, match=problem):
        events_of(data)


def compressors() -> dict[str, Callable[[bytes], bytes]]:
    found: dict[str, Callable[[bytes], bytes]] = {
        "": lambda b: b,
        "identity": lambda b: b,
        "gzip": gzip.compress,
        "deflate": zlib.compress,
    }
    if BROTLI is not None:
        found["br"] = BROTLI.compress
    return found


@pytest.mark.parametrize("encoding", sorted(compressors()))
def test_each_content_encoding_is_undone(encoding: str) -> None:
    data = envelope(lengths=True)
    assert decode_body(compressors()[encoding](data), encoding) == data


def test_an_unknown_or_broken_encoding_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="not supported"):
        decode_body(b"x", "zstd")
    with pytest.raises(EnvelopeError, match="not valid gzip"):
        decode_body(b"not gzip", "gzip")


@pytest.fixture(scope="module")
def tracker() -> Iterator[ErrorTracker]:
    children: list[Child] = []

    def spawn(child: Child, env: Mapping[str, str]) -> Child:
        child.start(env=env)
        children.append(child)
        return child

    with tempfile.TemporaryDirectory(prefix="preflight-errortracker-") as tmp:
        try:
            tracker = start_error_tracker(Path(tmp) / "tracker", spawn)
            tracker.wait_ready(30.0)
            yield tracker
        finally:
            for child in children:
                child.stop()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_wrong_key_or_project_is_refused(tracker: ErrorTracker) -> None:
    key, _, rest = tracker.dsn.removeprefix("http://").partition("@")
    host = rest.rsplit("/", 1)[0]
    auth = {"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7"}
    body = envelope(lengths=True)
    assert post(f"http://{host}/api/1/envelope/", body, {"X-Sentry-Auth": "Sentry x=y"}) == 401
    assert post(f"http://{host}/api/2/envelope/", body, auth) == 404
    assert post(f"http://{host}/api/1/envelope/?sentry_key={key}", body, {}) == 200


REPORTER = """
import logging, sys
import sentry_sdk
sentry_sdk.init(dsn=sys.argv[1], release="probe@1", default_integrations=True)
try:
    raise KeyError("reported by a real sentry-sdk")
except KeyError:
    logging.getLogger("reporter").exception("it broke")
sentry_sdk.flush(timeout=10)
"""


def test_a_real_sentry_sdk_reports_to_the_stand_in(tracker: ErrorTracker) -> None:
    """sentry-sdk's own transport (compressed as it chooses) lands in the events file."""
    result = subprocess.run(
        [sys.executable, "-c", REPORTER, tracker.dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", os.defpath)},
    )
    assert result.returncode == 0, result.stderr
    events = [e for e in read_events(tracker.events) if e.get("release") == "probe@1"]
    assert len(events) == 1, events
    assert events[0]["exception"]["values"][-1]["type"] == "KeyError"


def test_a_target_file_names_the_events_file_relative_to_itself(tmp_path: Path) -> None:
    """External targets give MON-ERROR-TRACKING their tracker's events as `error_events`."""
    path = tmp_path / "t.yaml"
    path.write_text("name: a\nedge_url: https://x\nadmin_key: k\nerror_events: out/e.jsonl\n")
    info = load_target_file(path, {})
    assert info.observability.error_events == (tmp_path / "out/e.jsonl").resolve()
    write_target_file(info, tmp_path / "back.yaml")
    assert (
        load_target_file(tmp_path / "back.yaml", {}).observability.error_events
        == info.observability.error_events
    )
    path.write_text("name: a\nedge_url: https://x\nadmin_key: k\n")
    assert load_target_file(path, {}).observability.error_events is None


# -- the containers target's tracker stops with its run -------------------------------------------

LAUNCHER = """
import contextlib, sys, time
from pathlib import Path
from preflight.targets.containers import errortracking
try:
    with contextlib.ExitStack() as stack:  # the target's exit closes its stack
        tracker = errortracking.start(Path(sys.argv[1]), "127.0.0.1", stack, lambda _m: None)
        tracker.wait_ready(60)
        print(tracker.child.pid, tracker.url, flush=True)
        time.sleep(600)
except KeyboardInterrupt:
    print("left the run", flush=True)
    time.sleep(600)  # the launcher lives on: what ended the stand-in was the run's exit
"""


def _gone(pid: int) -> bool:
    """The process ended (a zombie nobody reaped yet has ended too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGKILL], ids=["interrupted", "killed outright"]
)
def test_a_containers_runs_tracker_ends_with_its_launcher(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C ends the launcher's run (its exit stops the stand-in); SIGKILL leaves no exit to
    run, and the stand-in's parent-death signal ends it."""
    with subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path / "tracker")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as launcher:
        try:
            assert launcher.stdout is not None
            pid_text, url = launcher.stdout.readline().split()
            pid = int(pid_text)
            assert not _gone(pid)
            with urllib.request.urlopen(f"{url}/health", timeout=10) as response:  # noqa: S310
                assert response.status == 200
            launcher.send_signal(signum)
            if signum == signal.SIGINT:
                assert launcher.stdout.readline().strip() == "left the run"
                assert _gone(pid), f"the stand-in (pid {pid}) outlived the run's exit"
            launcher.kill()
            launcher.wait(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    assert until(lambda: _gone(pid), 30), f"the stand-in (pid {pid}) outlived its launcher"
