"""The failover drill: under the client journal's workload the PostgreSQL primary is killed
(SIGKILL) while its standby is behind, the standby is promoted (`pg_promote()`; where a restart
policy would bring the killed primary back on its old data, the target's failover control first
keeps it down, as an operator must), and the API workers must carry on against it without a
restart of their own (their DSN names both servers, and their pools take whichever accepts
writes): sends must succeed again after the promotion. The journal must show no acknowledged
message lost and none stored twice; the drill records the RTO (from the kill until sends succeed
again) with the journal's figures.

Behind, because a primary rarely dies at a moment its standby has everything: for HELD_S before
the kill its WAL senders are stopped, as when the link between them stalls, while sends go on.
A commit acknowledged before its standby had it is then lost with the primary, and its seq is
given to the next message on the promoted one (a client that saw the lost message takes the new
one for a repeat). Only a commit that waits for the standby (synchronous replication) survives
this. With asynchronous replication the drill fails and says how many sends were lost, every
time where the killed primary stays down (the native target); where a restart policy brings it
back before the fence, it may send the held WAL first.

Afterwards, still under the workload, the target's failover control rejoins the pair as it
started (the lost primary rebuilt and primary again through a switchover, the standby streaming
from it), also when the drill fails, so later probes and drills find the system they expect;
the journal's verdict covers that switchover too.
"""

from __future__ import annotations

import pytest

from checks.drills._drills import (
    STEADY_S,
    reports,
    serving_everywhere,
    until_unready,
    wait_edge_ready,
)
from checks.drills._journal import Journal, assert_clean
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.target import ProbeTarget

pytestmark = pytest.mark.budget(600)

UNREADY_WITHIN_S = 10.0  # the workers notice the primary is gone (OPS-DB-LOSS's bound)
RECOVERY_S = 30.0  # sends must succeed again within this of the promotion
HELD_S = 1.0  # the standby receives nothing for this long before the kill
REJOIN_S = 120.0


@pytest.mark.checklist("BAK-FAILOVER-DRILL")
def test_the_standby_takes_over_a_killed_primary_without_loss(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Failover that exists only on paper does not work at 3 a.m."""
    target.requires("failover")
    failover = target.info.drills.failover
    assert failover is not None
    primary = target.control("postgres")
    serving_everywhere(target)
    before = {w: r["pid"] for w, r in reports(target).items()}
    with Journal(target, "failover") as journal:
        journal.steady(STEADY_S)
        with failover.replication_held():
            journal.mark("held")
            journal.steady(HELD_S)
            journal.mark("kill")
            primary.kill()
        try:
            noticed_s = until_unready(target, UNREADY_WITHIN_S)
            journal.mark("promote")
            failover.promote()
            journal.mark("promoted")
            until(lambda: journal.first_success(journal.marks["promoted"]) is not None, RECOVERY_S)
            # Not the first success after the kill: where a restart policy brings the killed
            # primary back on its old data (the containers target), sends succeed there until
            # the target fences it for the promotion; the workers must follow the promoted one.
            followed_at = journal.first_success(journal.marks["promoted"])
            back_at = journal.first_success(journal.marks["kill"])
            journal.steady(STEADY_S)
            after = {w: r["pid"] for w, r in reports(target).items()}
        finally:
            # Under the workload too: the switchover back must lose nothing either.
            journal.mark("rejoin")
            failover.rejoin()
            wait_edge_ready(target, REJOIN_S)
            journal.mark("rejoined")
        journal.steady(STEADY_S)
    verdict = journal.verdict
    assert verdict is not None
    verdict.record(evidence)
    marks = journal.marks
    held = {s.client_msg_id for s in journal.acked_within(marks["held"], marks["kill"])}
    evidence.figure("sends acknowledged while the standby received nothing", len(held), "")
    timings = {
        "readiness failing after the kill": noticed_s,
        "promotion took": marks["promoted"] - marks["promote"],
        "RTO: kill to the first successful send": None
        if back_at is None
        else back_at - marks["kill"],
        "promotion to the first successful send": (
            None if followed_at is None else followed_at - marks["promoted"]
        ),
        "rejoined (the old primary rebuilt and primary again)": marks["rejoined"] - marks["rejoin"],
    }
    for name, seconds in timings.items():
        if seconds is not None:
            evidence.figure(name, round(seconds, 3), "s")
    evidence.note(f"worker pids before {before}, after {after}")

    assert followed_at is not None, (
        f"sends must succeed again within {RECOVERY_S:g} s of the standby's promotion (none "
        f"did: the workers did not follow the failover; {verdict.summary()})"
    )
    assert after == before, (
        f"the workers must follow the failover without a restart (pids before {before}, after "
        f"{after})"
    )
    lost_held = held.intersection(verdict.lost)
    assert not lost_held, (
        f"{len(lost_held)} of the {len(held)} sends the primary acknowledged while its standby "
        "received nothing were lost with it: a commit is acknowledged before the standby has it "
        f"(asynchronous replication), so a failover loses up to the replication lag ("
        f"{verdict.summary()})"
    )
    assert_clean("PostgreSQL failover", verdict)
