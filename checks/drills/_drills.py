"""What the fault, rollout and alert drills share: the API workers a target lets them control,
each worker's own address where the target gives it, and waiting for the system to be whole
again after a drill (a drill that cannot restore is an error, never a pass)."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from checks._chat import Tenant
from preflight.client import polite
from preflight.polling import poll, waited
from preflight.probe.metrics import RUNTIME_SAMPLES
from preflight.probe.target import ProbeTarget

STEADY_S = 1.0  # the workload before and after each fault
# A worker must have closed its listener within this of its SIGTERM (drain delay, at most 5 s)
# and answered what it was serving within the rest of the API's 15 s drain budget.
LISTENER_CLOSED_WITHIN_S = 15.0
HELD_ANSWER_TIMEOUT_S = 20.0
RESTORE_TIMEOUT_S = 30.0
POLL_S = 0.05


def api_workers(target: ProbeTarget) -> list[str]:
    """The target's controllable API workers (`api-0`, `api-1`, ...); skips without one."""
    names = sorted(n for n in target.info.drills.control if n.startswith("api"))
    if not names:
        known = ", ".join(sorted(target.info.drills.control)) or "none"
        pytest.skip(
            f"target {target.name} gives no control over an API worker (it controls: {known}); "
            "add control.api-0 (stop, start, kill) to the target file to run this drill"
        )
    return names


def spare_worker(target: ProbeTarget) -> str:
    """The first API worker, for drills that take one down while another keeps serving; skips
    when the target controls only one (taking it down is an outage, not a drill)."""
    names = api_workers(target)
    if len(names) < 2:
        pytest.skip(
            f"target {target.name} controls one API worker ({names[0]}): this drill takes one "
            "down while another serves; start the target with two or more"
        )
    return names[0]


def status_of(url: str, timeout: float = 1.0) -> int | str:
    """The HTTP status of a GET, or the name of the error when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return type(reason).__name__


def _ok(status: int | str) -> bool:
    return status == 200


def edge_ready(target: ProbeTarget) -> int:
    return polite(lambda: target.http.get("/v1/health/ready")).status


def wait_edge_ready(target: ProbeTarget, timeout: float = RESTORE_TIMEOUT_S) -> float:
    """Seconds until the edge's readiness answers 200; RuntimeError (the drill errors) when it
    does not within `timeout`."""
    ready = poll(lambda: edge_ready(target), timeout, interval=0.1, accept=_ok)
    if not ready.held:
        raise RuntimeError(
            f"{target.edge_url}/v1/health/ready did not answer 200 within {timeout:g} s after "
            f"the drill restored the system (last {ready.value})"
        )
    return ready.seconds


def until_unready(target: ProbeTarget, timeout: float) -> float | None:
    """Seconds until readiness fails: every worker's own where the target gives the addresses,
    else the edge's."""
    urls = [u for w in api_workers(target) if (u := target.worker_url(w))]

    def unready() -> bool:
        if urls:
            return all(status_of(f"{u}/v1/health/ready") != 200 for u in urls)
        return target.http.get("/v1/health/ready").status != 200

    return waited(unready, timeout, interval=POLL_S)


def wait_worker_ready(
    target: ProbeTarget, worker: str, timeout: float = RESTORE_TIMEOUT_S
) -> float:
    """Seconds until `worker` is ready: its own readiness where the target gives its address,
    else the edge's."""
    url = target.worker_url(worker)
    if url is None:
        return wait_edge_ready(target, timeout)
    ready = poll(lambda: status_of(f"{url}/v1/health/ready"), timeout, interval=POLL_S, accept=_ok)
    if not ready.held:
        raise RuntimeError(
            f"{worker} ({url}) was not ready within {timeout:g} s of its start (last {ready.value})"
        )
    return ready.seconds


@dataclass
class Poller:
    """GETs `url` every POLL_S in a thread and keeps (seconds since start, status or error)."""

    url: str
    seen: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Poller:
        t0 = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                self.seen.append((round(time.monotonic() - t0, 3), status_of(self.url, 0.5)))
                self._stop.wait(POLL_S)

        self._thread = threading.Thread(target=run, name=f"poll {self.url}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def changes(self) -> list[tuple[float, int | str]]:
        """Only the observations that differ from the one before."""
        out: list[tuple[float, int | str]] = []
        for at, status in self.seen:
            if not out or out[-1][1] != status:
                out.append((at, status))
        return out


def reports(target: ProbeTarget) -> dict[str, dict[str, Any]]:
    """Worker id -> its /v1/admin/runtime report (pid, version, migrations), through the edge;
    RUNTIME_SAMPLES requests reach every worker of a small target."""
    admin = target.http.as_admin(target.admin_key)
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(RUNTIME_SAMPLES):
        response = polite(lambda: admin.get("/v1/admin/runtime"))
        if response.status == 200:
            report: dict[str, Any] = response.json()
            seen[str(report["worker_id"])] = report
    return seen


def serving_everywhere(target: ProbeTarget, timeout: float = RESTORE_TIMEOUT_S) -> float:
    """Seconds until every API worker answers through the edge again. After a worker was down
    the edge avoids it for a while (max_fails, fail_timeout); a drill that started meanwhile
    would put no traffic on it and prove nothing."""
    names = [n for n in target.info.drills.control if n.startswith("api-")]
    answered = poll(
        lambda: len(reports(target)), timeout, interval=0.5, accept=lambda n: n >= len(names)
    )
    if not answered.held:
        raise RuntimeError(
            f"not every API worker answered through {target.edge_url} within {timeout:g} s "
            f"(expected {len(names)})"
        )
    return answered.seconds


@dataclass(frozen=True)
class InFlight:
    """A graceful stop of one worker with a request in flight at it: the exit code, and what
    the request got (an HTTP status, or the name of the error when no answer came)."""

    worker: str
    exit_code: int | None
    answer: int | str | None  # None: the target gives no address of the worker, nothing held

    @property
    def lost(self) -> bool:
        return self.answer is not None and self.answer != 201

    def describe(self) -> str:
        if self.answer is None:
            return f"{self.worker}: exit code {self.exit_code} (no request held: no address)"
        return (
            f"{self.worker}: exit code {self.exit_code}; a message send in flight at it across "
            f"the stop got {self.answer}"
        )


class HeldSender:
    """Sends messages straight to API workers (their own addresses) with the body held back, so
    a request is surely in flight at the worker while it is stopped. A light workload through
    the edge may have nothing in flight at the moment of a SIGTERM, and then a worker that
    dies at once looks as good as one that drains; this one request cannot miss."""

    def __init__(self, target: ProbeTarget) -> None:
        self.target = target
        tenant = Tenant.create(target, "drill-in-flight")
        self.sender = tenant.user("held")
        self.channel = tenant.channel(self.sender)

    def stop(self, worker: str, stop: Callable[[], int | None]) -> InFlight:
        """Run `stop` (a graceful stop of `worker`, or a redeploy that begins with one) while a
        send is in flight at it: the headers and half the body go first, the rest only once
        the worker has closed its listener (or exited), which a drain does only after its
        delay, so the request is answered only if the worker finishes what it serves. Nothing
        is held when the target gives no address of `worker`."""
        url = self.target.worker_url(worker)
        if url is None:
            return InFlight(worker, stop(), None)
        address = urllib.parse.urlsplit(url)
        body = json.dumps(
            {"text": "held across a stop", "client_msg_id": f"held-{secrets.token_hex(6)}"}
        ).encode()
        conn = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=HELD_ANSWER_TIMEOUT_S
        )
        conn.putrequest("POST", f"/v1/channels/{self.channel}/messages")
        conn.putheader("Authorization", f"Bearer {self.sender.access_token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body[: len(body) // 2])
        stopped = threading.Event()
        answers: list[int | str] = []

        def finish() -> None:
            # Until the worker refuses new connections (its listener is closed) or is gone.
            poll(
                lambda: status_of(f"{url}/v1/health/live"),
                LISTENER_CLOSED_WITHIN_S,
                interval=POLL_S,
                accept=lambda status: not isinstance(status, int) or stopped.is_set(),
            )
            try:
                conn.send(body[len(body) // 2 :])
                response = conn.getresponse()
                response.read()
                answers.append(response.status)
            except (OSError, http.client.HTTPException) as exc:
                answers.append(type(exc).__name__)

        # `stop` runs in this thread: a redeploy starts the new process from here, and the
        # native target's children die with the thread that started them (PR_SET_PDEATHSIG).
        finishing = threading.Thread(target=finish, name=f"held-{worker}", daemon=True)
        finishing.start()
        try:
            code = stop()
        finally:
            stopped.set()
            finishing.join(timeout=LISTENER_CLOSED_WITHIN_S + HELD_ANSWER_TIMEOUT_S)
            conn.close()
        answer = answers[0] if answers else "no answer"
        return InFlight(worker, code, answer)
