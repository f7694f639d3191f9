"""Fault drills (security-and-drills.md section 4, D1-D4 and D13): under the client journal's
workload a component is stopped, killed or restarted, then restored; each drill judges the
journal (nothing lost, duplicated, reordered or undelivered) and its own pass criteria, and
writes its figures into the evidence. Every drill restores what it broke, also when it fails.

After a kill the drill starts the component again itself. Where a supervisor restarts a killed
API worker (the native target's does, as production's would; APP-SUPERVISED decides
supervision), that start finds it running and changes nothing; PostgreSQL and Redis are started
by the drill. A target file's `control` commands do the same elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass

import pytest
from websockets.exceptions import ConnectionClosed

from checks._chat import Actor, Tenant
from checks.drills._drills import (
    POLL_S,
    STEADY_S,
    HeldSender,
    InFlight,
    Poller,
    api_workers,
    assert_fails_fast,
    reports,
    serving_everywhere,
    spare_worker,
    status_of,
    until_unready,
    wait_edge_ready,
    wait_worker_ready,
)
from checks.drills._journal import (
    Attempt,
    Close,
    Journal,
    Verdict,
    assert_clean,
    closes_during,
    statuses,
)
from preflight.client import polite
from preflight.evidence import EvidenceLog
from preflight.polling import waited
from preflight.probe.target import ProbeTarget
from preflight.wsclient import connect

# The drill's time budget per phase, with room for a busy machine: each fault holds a workload
# through a kill, a grace period and a restore.
pytestmark = pytest.mark.budget(900)

GRACE_PERIOD_S = 15.0  # Kubernetes' default terminationGracePeriod is 30 s; the API promises 15
RECONNECTABLE = {1001: "going away", 1012: "service restart"}
DOWN_S = 2.0  # how long a killed or stopped dependency stays down
UNREADY_WITHIN_S = 10.0  # OPS-DB-LOSS: readiness fails within 10 s
RECOVERY_S = 30.0
FANOUT_BUDGET_S = 5.0  # after Redis is back, a new message reaches every socket within this
# Channel creations by one user in a row while Redis is down, until one is refused: a fixed
# count would pass under the limit on a busy machine, where requests are slow enough for the
# buckets to refill between them. A limiter that holds refuses long before the last attempt;
# one that lets everything through never does (or only the edge's per-address limit does, which
# the second user's creation right after tells apart).
LIMIT_ATTEMPTS = 300
# The burst is paced at 25 creations a second: the user's channel bucket (10 deep, 2 a second)
# empties in about half a second, while the edge's per-address limit (100 a second here) never
# sees it. Unpaced, the edge refused the burst now and then instead, and a 429 from the edge says
# nothing about the API's per-user limits.
BURST_INTERVAL_S = 0.04


# -- SIGTERM drain (D2): APP-GRACEFUL-SHUTDOWN and OPS-GRACEFUL-WS-DRAIN share one drill -----


@dataclass(frozen=True)
class DrainDrill:
    worker: str
    exit_code: int | None
    in_flight: InFlight  # a send held in flight at the worker across its SIGTERM
    stopped_in_s: float
    readiness: list[tuple[float, int | str]] | None  # the worker's own, from the SIGTERM on
    verdict: Verdict
    closes: list[Close]  # sockets closed between the SIGTERM and the worker's restart
    failed: list[Attempt]
    restarted_ready_s: float
    duration_s: float  # the whole drill, workload included (a fixture's time is not the test's)


@pytest.fixture(scope="module")
def drain(target: ProbeTarget) -> DrainDrill:
    """SIGTERM to one API worker under the workload, then start it again."""
    worker = spare_worker(target)
    control = target.control(worker)
    url = target.worker_url(worker)
    serving_everywhere(target)
    held = HeldSender(target)
    poller = Poller(f"{url}/v1/health/ready") if url else None
    drill_started = time.monotonic()
    with Journal(target, "sigterm") as journal:
        journal.steady(STEADY_S)
        journal.mark("sigterm")
        started = time.monotonic()
        try:
            with poller if poller is not None else contextlib.nullcontext():
                # SIGTERM, then SIGKILL after the grace period
                in_flight = held.stop(worker, control.stop)
                stopped_in = time.monotonic() - started
        finally:
            journal.mark("exited")
            control.start()
            ready_s = wait_worker_ready(target, worker)
            journal.mark("restarted")
        journal.steady(STEADY_S)
    verdict = journal.verdict
    assert verdict is not None
    return DrainDrill(
        worker=worker,
        exit_code=in_flight.exit_code,
        in_flight=in_flight,
        stopped_in_s=stopped_in,
        readiness=poller.changes() if poller is not None else None,
        verdict=verdict,
        # The worker's own sockets: nothing else was restarted meanwhile (a socket may see its
        # end a little after the process is gone).
        closes=closes_during(verdict.closes, journal.marks["sigterm"], journal.marks["restarted"]),
        failed=journal.failed_attempts(),
        restarted_ready_s=ready_s,
        duration_s=round(time.monotonic() - drill_started, 3),
    )


@pytest.mark.checklist("APP-GRACEFUL-SHUTDOWN")
def test_a_worker_drains_on_sigterm(drain: DrainDrill, evidence: EvidenceLog) -> None:
    """Abrupt shutdowns drop requests and WebSocket messages at every deploy."""
    drain.verdict.record(evidence)
    evidence.figure("drill duration", drain.duration_s, "s")
    evidence.figure("SIGTERM to exit", round(drain.stopped_in_s, 3), "s")
    evidence.figure("restarted worker ready after", round(drain.restarted_ready_s, 3), "s")
    evidence.note(f"{drain.worker}: exit code {drain.exit_code} after SIGTERM under the workload")
    if drain.readiness is None:
        evidence.note(f"the target gives no address of {drain.worker}: its readiness was not seen")
    else:
        evidence.note(f"{drain.worker} readiness from the SIGTERM on: {drain.readiness}")
        seen = [status for _at, status in drain.readiness]
        first_other = next((s for s in seen if s != 200), None)
        assert first_other == 503, (
            f"{drain.worker} must answer readiness 503 after SIGTERM before it stops listening "
            f"(got {drain.readiness})"
        )
    evidence.note(drain.in_flight.describe())
    assert not drain.in_flight.lost, (
        f"{drain.worker} must finish the request in flight at its SIGTERM "
        f"({drain.in_flight.describe()})"
    )
    assert not drain.failed, (
        f"requests in flight or arriving while {drain.worker} drained must all be answered "
        f"(got {len(drain.failed)} failed: {statuses(drain.failed)})"
    )
    assert drain.stopped_in_s < GRACE_PERIOD_S, (
        f"{drain.worker} must exit within the {GRACE_PERIOD_S:g} s grace period after SIGTERM "
        f"(took {drain.stopped_in_s:.1f} s)"
    )
    if drain.exit_code is not None:
        assert drain.exit_code == 0, (
            f"{drain.worker} must exit 0 after draining (got {_exit(drain.exit_code)})"
        )
    assert_clean("SIGTERM drain", drain.verdict)


@pytest.mark.checklist("OPS-GRACEFUL-WS-DRAIN")
def test_sockets_of_a_draining_worker_close_reconnectably_and_resume(
    drain: DrainDrill, evidence: EvidenceLog
) -> None:
    """Deploys otherwise drop every connected user with an error."""
    drain.verdict.record(evidence)
    codes = Counter(c.code for c in drain.closes)
    evidence.figure("sockets closed by the drain", len(drain.closes))
    evidence.note(f"close codes while {drain.worker} drained: {dict(codes)}")
    if not drain.closes:
        raise RuntimeError(
            f"none of the journal's {len(drain.verdict.closes)} sockets was held by "
            f"{drain.worker}: the drill could not see its close codes"
        )
    wrong = [c for c in drain.closes if c.code not in RECONNECTABLE]
    assert not wrong, (
        f"sockets of a draining worker must be closed with "
        f"{' or '.join(f'{k} ({v})' for k, v in RECONNECTABLE.items())} "
        f"(got {[(c.code, c.reason) for c in wrong]})"
    )
    assert drain.verdict.reconnects >= len(drain.closes), (
        f"every client whose socket was closed must reconnect to another worker "
        f"({len(drain.closes)} closed, {drain.verdict.reconnects} reconnected)"
    )
    assert_clean("SIGTERM drain (sockets)", drain.verdict)


# -- kill -9 (D1, D3, D4): BAK-FAILOVER-DRILL --------------------------------------------------


@pytest.mark.checklist("BAK-FAILOVER-DRILL")
@pytest.mark.parametrize("component", ["api", "redis", "postgres"])
def test_a_killed_component_is_recovered_without_loss(
    target: ProbeTarget, evidence: EvidenceLog, component: str
) -> None:
    """Failover that exists only on paper does not work at 3 a.m."""
    name = spare_worker(target) if component == "api" else component
    control = target.control(name)
    serving_everywhere(target)
    with Journal(target, f"kill-{component}") as journal:
        journal.steady(STEADY_S)
        journal.mark("kill")
        try:
            control.kill()
            time.sleep(DOWN_S)
        finally:
            journal.mark("start")
            control.start()
            ready_s = wait_edge_ready(target, RECOVERY_S)
        journal.steady(STEADY_S)
    verdict = journal.verdict
    assert verdict is not None
    verdict.record(evidence)
    evidence.note(
        f"SIGKILL to {name} under the workload; started again after {DOWN_S:g} s by the drill, "
        "unless a supervisor had restarted it by then (APP-SUPERVISED decides supervision)"
    )
    evidence.figure(f"{name} ready again after its start", round(ready_s, 3), "s")
    if component == "api" and not closes_during(
        verdict.closes, journal.marks["kill"], journal.marks["start"]
    ):
        raise RuntimeError(
            f"none of the journal's sockets was held by {name} when it was killed: the drill "
            "did not exercise it"
        )
    assert_clean(f"kill -9 {name}", verdict)


# -- PostgreSQL loss (D3) and start order (D13): OPS-DB-LOSS ---------------------------------


@pytest.mark.checklist("OPS-DB-LOSS")
@pytest.mark.parametrize("how", ["fast restart", "crash"])
def test_losing_postgresql_is_a_clean_503_and_recovers_by_itself(
    target: ProbeTarget, evidence: EvidenceLog, how: str
) -> None:
    """Workers that never reconnect turn a brief database blip into a long outage."""
    postgres = target.control("postgres")
    before = {w: r["pid"] for w, r in reports(target).items()}
    with Journal(target, f"postgres-{how.replace(' ', '-')}") as journal:
        journal.steady(STEADY_S)
        journal.mark("down")
        try:
            postgres.stop() if how == "fast restart" else postgres.kill()
            unready_s = until_unready(target, UNREADY_WITHIN_S)
            journal.steady(DOWN_S)
        finally:
            journal.mark("up")
            postgres.start()
            ready_s = wait_edge_ready(target, RECOVERY_S)
        journal.steady(STEADY_S)
    verdict = journal.verdict
    assert verdict is not None
    verdict.record(evidence)
    outage = journal.failed_attempts(journal.marks["down"], journal.marks["up"] + ready_s)
    if unready_s is not None:
        evidence.figure("readiness failing after PostgreSQL went", round(unready_s, 3), "s")
    evidence.figure("ready again after PostgreSQL started", round(ready_s, 3), "s")
    evidence.figure(
        "slowest answer during the outage", max((a.took for a in outage), default=0.0), "s"
    )
    evidence.note(f"answers during the outage: {statuses(outage)}")
    after = {w: r["pid"] for w, r in reports(target).items()}
    evidence.note(f"worker pids before {before}, after {after}")

    assert unready_s is not None, (
        f"readiness must fail within {UNREADY_WITHIN_S:g} s of PostgreSQL's {how} (it stayed 200)"
    )
    assert_fails_fast(outage, "PostgreSQL is down")
    assert after == before, (
        f"the API must recover without restarting its workers (pids before {before}, after {after})"
    )
    assert_clean(f"PostgreSQL {how}", verdict)


@pytest.mark.checklist("OPS-DB-LOSS")
def test_a_worker_started_before_its_databases_becomes_ready_once_they_are_up(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A worker that crash-loops or stays unready when started first turns an outage into two."""
    worker = api_workers(target)[0]
    url = target.worker_url(worker)
    if url is None:
        pytest.skip(f"target {target.name} gives no address of {worker} to watch it start")
    api, redis, postgres = (target.control(n) for n in (worker, "redis", "postgres"))
    try:
        api.stop()
        redis.stop()
        postgres.stop()
        api.start()
        live = waited(
            lambda: status_of(f"{url}/v1/health/live") == 200, RECOVERY_S, interval=POLL_S
        )
        time.sleep(DOWN_S)  # the worker waits for its databases: alive, not ready, no crash
        waiting = (status_of(f"{url}/v1/health/live"), status_of(f"{url}/v1/health/ready"))
        pid = int(str(_runtime_of(url, target.admin_key)["pid"]))
    finally:
        redis.start()
        postgres.start()
    try:
        ready_s: float | None = wait_worker_ready(target, worker, RECOVERY_S)
    except RuntimeError:
        ready_s = None
    finally:
        api.start()  # a worker that died waiting comes back for the next drill
        wait_edge_ready(target)
    after = int(str(_runtime_of(url, target.admin_key)["pid"]))
    if live is not None:
        evidence.figure(f"{worker} live after its start", round(live, 3), "s")
    if ready_s is not None:
        evidence.figure(
            f"{worker} ready after PostgreSQL and Redis started", round(ready_s, 3), "s"
        )
    evidence.note(
        f"{worker} started with PostgreSQL and Redis down: live {waiting[0]}, ready "
        f"{waiting[1]} after {DOWN_S:g} s; pid {pid} then {after}"
    )
    assert waiting == (200, 503), (
        f"{worker} started before its databases must be live (200) and not ready (503) while "
        f"it waits (got live {waiting[0]}, ready {waiting[1]})"
    )
    assert ready_s is not None, (
        f"{worker} must become ready within {RECOVERY_S:g} s of PostgreSQL and Redis starting "
        "(it did not)"
    )
    assert after == pid, (
        f"{worker} must become ready without a restart of its own (pid {pid}, now {after})"
    )


# -- Redis loss (D4): OPS-REDIS-LOSS -----------------------------------------------------------


@pytest.mark.checklist("OPS-REDIS-LOSS")
@pytest.mark.parametrize("how", ["restart", "crash"])
def test_losing_redis_keeps_writes_limits_and_revocations(
    target: ProbeTarget, evidence: EvidenceLog, how: str
) -> None:
    """A cache or limiter outage should not become a full outage."""
    redis = target.control("redis")
    tenant = Tenant.create(target, f"drill-redis-{how}")
    revoked, limited = tenant.user("revoked"), tenant.user("limited")
    bystander = tenant.user("bystander")
    revoke = polite(lambda: tenant.client.post(f"/v1/users/{revoked.user_id}/revoke"))
    if revoke.status != 204:
        raise RuntimeError(f"revoking a user before the drill failed: {revoke}")
    with Journal(target, f"redis-{how}") as journal:
        journal.steady(STEADY_S)
        journal.mark("down")
        try:
            redis.stop() if how == "restart" else redis.kill()
            burst = _create_channels_until_limited(limited)
            other = _create_channel(bystander)[0]
            journal.steady(DOWN_S)
        finally:
            journal.mark("up")
            redis.start()
            ready_s = wait_edge_ready(target, RECOVERY_S)
        journal.mark("ready")
        journal.steady(STEADY_S * 2)
    verdict = journal.verdict
    assert verdict is not None
    verdict.record(evidence)
    during = journal.failed_attempts(journal.marks["down"], journal.marks["up"])
    delays = journal.delivery_delays(journal.marks["ready"])
    http_revoked = polite(lambda: revoked.client.get("/v1/me")).status
    socket_revoked = _socket_auth(target, revoked.access_token)
    evidence.figure("ready again after Redis started", round(ready_s, 3), "s")
    evidence.figure("failed sends while Redis was down", len(during))
    arrived = [d for d in delays.values() if d != float("inf")]
    evidence.figure("messages sent after Redis came back", len(delays))
    evidence.figure("of them never delivered to every socket", len(delays) - len(arrived))
    evidence.figure(
        "slowest fan-out after Redis came back", round(max(arrived, default=0.0), 3), "s"
    )
    evidence.note(
        f"revoked token after Redis came back: HTTP {http_revoked}, socket {socket_revoked}"
    )

    assert not during, (
        f"message writes must be unaffected while Redis is down (got {statuses(during)})"
    )
    _assert_limits_held(burst, other, evidence)
    assert http_revoked == 401, (
        f"a revoked token must stay revoked after Redis comes back (GET /v1/me answered "
        f"{http_revoked})"
    )
    assert socket_revoked != "authenticated", (
        "a revoked token must not authenticate a socket after Redis comes back (it did)"
    )
    slow = {m: d for m, d in delays.items() if d > FANOUT_BUDGET_S}
    if not delays:
        raise RuntimeError("no message was sent after Redis came back: fan-out was not observed")
    assert not slow, (
        f"fan-out must resume once Redis is back: every message sent after it must reach every "
        f"socket within {FANOUT_BUDGET_S:g} s (got {len(slow)} of {len(delays)} slower or "
        f"never delivered)"
    )
    assert_clean(f"Redis {how}", verdict)


# -- helpers -----------------------------------------------------------------------------------


def _exit(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def _runtime_of(url: str, admin_key: str) -> dict[str, object]:
    headers = {"X-Admin-Key": admin_key}
    request = urllib.request.Request(f"{url}/v1/admin/runtime", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
        report: dict[str, object] = json.loads(resp.read())
    return report


def _assert_limits_held(
    burst: list[tuple[int, str | None]], other: int, evidence: EvidenceLog
) -> None:
    """The per-user limits while Redis was down: the burst refused (429 with Retry-After, never
    a 5xx), and refused for the user, not for the address (`other`: another user's creation
    right after)."""
    answers = Counter(status for status, _retry in burst)
    evidence.note(
        f"{len(burst)} channel creations in a row by one user while Redis was down, until one "
        f"was refused: {dict(answers)}; another user's right after: HTTP {other} "
        "(documented: limits fall back to each worker's memory, chatsdk/ratelimit.py)"
    )
    assert answers.get(429), (
        f"per-user limits must still hold while Redis is down, from each worker's memory "
        f"(got {dict(answers)} for {len(burst)} channel creations in a row)"
    )
    assert other == 201, (
        f"the refusal must be the user's own limit: another user's channel creation right after "
        f"must succeed (got {other}; a per-address limit at the edge is not a per-user limit)"
    )
    server_errors = {s: n for s, n in answers.items() if s >= 500}
    assert not server_errors, (
        f"the rate limiter must not fail closed while Redis is down (got {server_errors})"
    )
    assert all(retry for status, retry in burst if status == 429), (
        "every 429 while Redis is down must carry Retry-After"
    )


def _create_channels_until_limited(user: Actor) -> list[tuple[int, str | None]]:
    answers: list[tuple[int, str | None]] = []
    while len(answers) < LIMIT_ATTEMPTS and (not answers or answers[-1][0] != 429):
        started = time.monotonic()
        answers.append(_create_channel(user))
        time.sleep(max(0.0, BURST_INTERVAL_S - (time.monotonic() - started)))
    return answers


def _create_channel(user: Actor) -> tuple[int, str | None]:
    response = user.client.post("/v1/channels", {"name": "burst", "kind": "public"})
    return response.status, response.headers.get("retry-after")


def _socket_auth(target: ProbeTarget, token: str) -> str:
    """What the realtime endpoint answers to an auth frame with `token`: the frame's type, or
    the close code."""
    try:
        with connect(target.ws_url, ssl=target.ssl_context(), open_timeout=5) as conn:
            conn.send(json.dumps({"type": "auth", "token": token}))
            frame = json.loads(conn.recv(timeout=5))
            return str(frame.get("type"))
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else 1006}"
    except TimeoutError:
        return "no answer"
