"""Partition drills: under the client journal's workload the API workers are cut off PostgreSQL,
or off Redis, by the network while every process keeps running, then the cut heals.

A partition is harder on the API than a stopped store: nothing refuses a connection or closes
one, packets simply go nowhere, so every wait that has no bound of its own hangs. Each drill
judges what clients saw during the cut (readiness 503 on every worker, requests answered fast),
the journal (nothing acknowledged lost, nothing duplicated), and the recovery once the network
is back (every worker ready again, with no restart, and messages fanned out again), and records
how long readiness took to turn 503 and service took to resume.

The target cuts the network (`partitions`: the containers target disconnects the API containers
from the store's own network); targets that cannot skip, naming the capability.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from checks.drills._drills import (
    HANG_S,
    POLL_S,
    STEADY_S,
    assert_fails_fast,
    reports,
    serving_everywhere,
    status_of,
    wait_edge_ready,
)
from checks.drills._journal import Attempt, Journal, Verdict, assert_clean, statuses
from preflight.evidence import EvidenceLog
from preflight.polling import Polled, poll
from preflight.probe.target import ProbeTarget

pytestmark = pytest.mark.budget(600)

# How long the cut holds: longer than the API's longest wait on a store (its statement timeout,
# 10 s), so a request that meets the partition has to end while the partition lasts.
PARTITION_S = 12.0
UNREADY_WITHIN_S = 10.0  # readiness answers 503 on every worker within this of the cut
RECOVERY_S = 30.0  # every worker ready again within this of the heal
FANOUT_BUDGET_S = 5.0  # after the heal, a new message reaches every socket within this
READINESS_TIMEOUT_S = 5.0  # a readiness answer slower than this is no answer


@dataclass(frozen=True)
class PartitionDrill:
    store: str
    how: str  # what the target did to cut the network
    unready_s: float | None  # cut -> readiness 503 on every worker (None: not within the limit)
    readiness: dict[str, int | str]  # worker -> its last readiness answer during the cut
    ready_s: float | None  # heal -> every worker and the edge ready (None: not within the limit)
    verdict: Verdict
    during: list[Attempt]  # failed attempts from the cut until service resumed
    slowest_s: float  # the slowest attempt from the cut until service resumed
    delays: dict[str, float]  # messages sent once service resumed -> slowest delivery
    pids_before: dict[str, object]  # worker id -> (pid, start time)
    pids_after: dict[str, object]
    marks: dict[str, float]  # journal seconds of the cut, the heal, ...

    def record(self, evidence: EvidenceLog) -> None:
        self.verdict.record(evidence)
        evidence.note(f"cut: {self.how}; held {PARTITION_S:g} s, then healed ({self.marks})")
        if self.unready_s is not None:
            evidence.figure(f"readiness 503 after the cut from {self.store}", self.unready_s, "s")
        evidence.note(f"each worker's readiness during the cut: {self.readiness}")
        if self.ready_s is not None:
            evidence.figure(f"service resumed after the heal from {self.store}", self.ready_s, "s")
        evidence.figure("failed attempts during the partition", len(self.during))
        evidence.figure("slowest answer during the partition", round(self.slowest_s, 3), "s")
        evidence.note(f"answers during the partition: {statuses(self.during)}")
        for a in sorted(self.during, key=lambda a: a.took)[-3:]:
            evidence.note(f"slow failed attempt: at {a.at} s, {a.took} s, {a.status} {a.detail}")
        arrived = [d for d in self.delays.values() if d != float("inf")]
        evidence.figure("messages sent after service resumed", len(self.delays))
        evidence.figure(
            "slowest fan-out after service resumed", round(max(arrived, default=0), 3), "s"
        )
        evidence.note(
            f"worker (pid, start time) before {self.pids_before}, after {self.pids_after}"
        )


def partition_drill(target: ProbeTarget, store: str) -> PartitionDrill:
    """Cut the API workers off `store` under the journal's workload, hold, heal, and see."""
    partitions = target.partitions()
    if store not in partitions.stores:
        pytest.skip(
            f"target {target.name} cannot cut the API off {store} alone (it can: "
            f"{', '.join(partitions.stores) or 'none'})"
        )
    workers = dict(target.info.drills.worker_urls)
    serving_everywhere(target)
    before = _processes(target)
    with Journal(target, f"partition-{store}") as journal:
        journal.steady(STEADY_S)
        journal.mark("cut")
        try:
            how = partitions.cut(store)
            unready = _until_all(workers, target, 503, UNREADY_WITHIN_S)
            journal.steady(PARTITION_S - (unready.seconds if unready.held else UNREADY_WITHIN_S))
        finally:
            journal.mark("heal")
            healing = time.monotonic()
            partitions.heal(store)
            ready = _until_all(workers, target, 200, RECOVERY_S)
            ready_s = time.monotonic() - healing
            wait_edge_ready(target, RECOVERY_S)  # the drill errors if the system stays down
        journal.mark("resumed")
        journal.steady(STEADY_S * 2)
    verdict = journal.verdict
    assert verdict is not None
    # What met the partition: every attempt still unanswered at the cut or started before
    # service resumed (a request in flight at the cut waits on a connection to nowhere).
    window = [
        a
        for s in journal.sends
        for a in s.attempts
        if a.at + a.took >= journal.marks["cut"] and a.at < journal.marks["resumed"]
    ]
    return PartitionDrill(
        store=store,
        how=how,
        unready_s=round(unready.seconds, 3) if unready.held else None,
        readiness=unready.value,
        ready_s=round(ready_s, 3) if ready.held else None,
        verdict=verdict,
        during=[a for a in window if a.failed],
        slowest_s=max((a.took for a in window), default=0.0),
        delays=journal.delivery_delays(journal.marks["resumed"]),
        pids_before=before,
        pids_after=_processes(target),
        marks=dict(journal.marks),
    )


def assert_recovers(drill: PartitionDrill) -> None:
    """What every partition drill demands of the time around the cut and after the heal."""
    __tracebackhide__ = True
    assert drill.unready_s is not None, (
        f"readiness must answer 503 on every API worker within {UNREADY_WITHIN_S:g} s of the "
        f"partition from {drill.store} (last answers {drill.readiness})"
    )
    hung = drill.slowest_s >= HANG_S
    assert not hung, (
        f"requests during the partition from {drill.store} must be answered within {HANG_S:g} s "
        f"(the slowest took {drill.slowest_s:.1f} s: a wait without a bound)"
    )
    assert drill.ready_s is not None, (
        f"every API worker must be ready again within {RECOVERY_S:g} s of the partition from "
        f"{drill.store} healing (it was not)"
    )
    assert drill.pids_after == drill.pids_before, (
        f"the API must recover from the partition without restarting its workers ((pid, start "
        f"time) before {drill.pids_before}, after {drill.pids_after})"
    )
    if not drill.delays:
        raise RuntimeError("no message was sent after service resumed: fan-out was not observed")
    slow = {m: d for m, d in drill.delays.items() if d > FANOUT_BUDGET_S}
    assert not slow, (
        f"fan-out must resume after the partition from {drill.store} heals: every message sent "
        f"after it must reach every socket within {FANOUT_BUDGET_S:g} s (got {len(slow)} of "
        f"{len(drill.delays)} slower or never delivered)"
    )
    assert_clean(f"partition from {drill.store}", drill.verdict)


@pytest.mark.checklist("OPS-PARTITION-DB")
def test_a_partition_from_postgresql_fails_fast_and_heals_without_loss(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Workers waiting on connections to nowhere hang every request while the network is split."""
    drill = partition_drill(target, "postgres")
    drill.record(evidence)
    assert_fails_fast(drill.during, "the API is cut off PostgreSQL")
    assert_recovers(drill)


@pytest.mark.checklist("OPS-PARTITION-REDIS")
def test_a_partition_from_redis_keeps_writes_and_heals_without_loss(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A cache that vanishes from the network must not stall writes nor end fan-out for good."""
    drill = partition_drill(target, "redis")
    drill.record(evidence)
    assert not drill.during, (
        f"message writes must be unaffected while the API is cut off Redis (got "
        f"{statuses(drill.during)})"
    )
    assert_recovers(drill)


# -- helpers -----------------------------------------------------------------------------------


def _processes(target: ProbeTarget) -> dict[str, object]:
    """Worker id -> (pid, start time): a container's process may be pid 1 before and after a
    restart."""
    return {w: (r["pid"], r["started_at"]) for w, r in reports(target).items()}


def _readiness(workers: dict[str, str], target: ProbeTarget) -> dict[str, int | str]:
    """Each worker's readiness now, asked of all at once (the edge's where the target gives no
    worker address)."""
    if not workers:
        return {"edge": target.http.get("/v1/health/ready").status}
    with ThreadPoolExecutor(len(workers)) as pool:
        answers = pool.map(
            lambda url: status_of(f"{url}/v1/health/ready", READINESS_TIMEOUT_S), workers.values()
        )
        return dict(zip(workers, answers, strict=True))


def _until_all(
    workers: dict[str, str], target: ProbeTarget, status: int, timeout: float
) -> Polled[dict[str, int | str]]:
    """Until every worker's readiness answers `status`."""
    return poll(
        lambda: _readiness(workers, target),
        timeout,
        interval=POLL_S,
        accept=lambda seen: all(s == status for s in seen.values()),
    )
