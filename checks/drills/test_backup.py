"""Backup and restore drills: the backups the schedule takes (their age, RPO, alerting), the
restore drill (back up, declare an incident, restore the newest backup into a new system, read
the data back through its edge; RTO measured), retention pruning, off-site copies and Redis.

The schedule's backups are judged as the catalogue lists them (trigger "schedule"); the drills'
own backups are taken with the target's backup job (trigger "manual")."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from checks.drills import _dataset
from checks.drills._backup import (
    DAILY_MAX_AGE_S,
    DAY_S,
    JOB_TIMEOUT_S,
    LIVE_TABLES,
    RETENTION_DAYS,
    RPO_OBJECTIVE_S,
    RPO_WAL_OBJECTIVE_S,
    RTO_OBJECTIVE_S,
    RestoreDrill,
    locked,
    own_like_repository,
    parse_time,
    read_catalogue,
    restore_drill,
    run_backup,
    run_gaps,
    schedule_grace_s,
    scheduled_runs,
    sha256_file,
    successful,
    write_catalogue,
)
from checks.monitoring._monitoring import SCRAPE_POLL_S, WATCH_TIMEOUT_S, prom, promql
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.postgres_bin import PG_BIN
from preflight.probe import undecided
from preflight.probe.target import ProbeTarget

# The drill's time budget per phase, with room for a busy machine: backup jobs may take up to 10
# minutes (JOB_TIMEOUT_S) before a restore.
pytestmark = pytest.mark.budget(1800)

BACKUP_GAUGE = "chatsdk_backup_last_success_timestamp_seconds"
MB = 1e6


@pytest.fixture(scope="module")
def drill(target: ProbeTarget) -> RestoreDrill:
    """The restore drill, once for the probes that judge it."""
    return restore_drill(target)


def scheduled_backups(target: ProbeTarget, evidence: EvidenceLog) -> list[dict[str, Any]]:
    """The schedule's successful backups, oldest first; fails when there is none."""
    __tracebackhide__ = True
    repository = target.backup_dir
    catalogue = read_catalogue(repository)
    runs = [b for b in catalogue.get("backups", []) if b.get("trigger") == "schedule"]
    found = successful(catalogue, "schedule")
    evidence.figure("scheduled runs", len(runs))
    evidence.figure("scheduled backups that succeeded", len(found))
    failures = "; ".join(f"{b['id']}: {b.get('error')}" for b in runs if b.get("status") != "ok")
    assert found, (
        f"the backup repository {repository} must hold a successful scheduled backup (got "
        f"{len(runs)} scheduled runs{', failed: ' + failures if failures else ''})"
    )
    return found


def schedule_every_s(target: ProbeTarget) -> float:
    __tracebackhide__ = True
    schedule = read_catalogue(target.backup_dir).get("schedule") or {}
    assert "every_s" in schedule, (
        f"the backup repository {target.backup_dir} must record the schedule of its backups "
        f"(got {schedule or 'none'})"
    )
    return float(schedule["every_s"])


def age_s(entry: dict[str, Any], key: str = "finished_at") -> float:
    return (datetime.now(UTC) - parse_time(str(entry[key]))).total_seconds()


def backup_figures(evidence: EvidenceLog, entry: dict[str, Any]) -> None:
    database = entry.get("database", {})
    evidence.figure("backup duration", float(entry.get("duration_s", 0)), "s")
    evidence.figure("backup size", int(entry.get("size_bytes", 0)), "bytes")
    if "dump" in database:
        evidence.figure("pg_dump size", int(database["dump"]["size"]), "bytes")
        evidence.note(f"pg_dump -Fc, compression {database['dump']['compression']}")
    if "base" in database:
        evidence.figure("pg_basebackup size", int(database["base"]["size"]), "bytes")
    for step, seconds in sorted(entry.get("steps", {}).items()):
        evidence.figure(f"backup step {step}", float(seconds), "s")


def restored_mismatches(drill: RestoreDrill) -> list[str]:
    """What differs between the restored database and what the backup recorded of its
    snapshot: as counted by the drill (but for the tables the API writes by itself once it
    runs), and as the restore job found before the API started."""
    assert drill.backup is not None
    recorded = drill.backup["database"]
    restored = drill.restored
    found = [
        f"table {table}: {restored['rows'].get(table)} rows restored, "
        f"{recorded['rows'].get(table)} at the backup"
        for table in sorted(set(recorded["rows"]) | set(restored.get("rows", {})))
        if table not in LIVE_TABLES
        and recorded["rows"].get(table) != restored.get("rows", {}).get(table)
    ]
    if restored.get("messages_digest") != recorded["messages_digest"]:
        found.append("the ordered digest of the messages differs from the backup's")
    found += [str(m) for m in drill.report.get("mismatches", [])]
    return list(dict.fromkeys(found))


def require_restore(drill: RestoreDrill) -> dict[str, Any]:
    """The drill's backup, once the backup and its restore both worked."""
    __tracebackhide__ = True
    assert drill.backup is not None, f"the backup job must take a backup ({drill.backup_error})"
    assert not drill.restore_error, (
        f"backup {drill.backup['id']} must restore into a new system (got {drill.restore_error})"
    )
    return drill.backup


# -- the schedule's backups ----------------------------------------------------------------------


@pytest.mark.checklist("INF-DB-BACKUP")
def test_a_scheduled_backup_job_has_produced_a_restorable_backup(
    target: ProbeTarget, evidence: EvidenceLog, drill: RestoreDrill
) -> None:
    """Without backups a single operator error or disk loss destroys every conversation."""
    every = schedule_every_s(target)
    evidence.figure("backup schedule interval", every / 3600, "h")
    newest = scheduled_backups(target, evidence)[-1]
    evidence.note(f"newest scheduled backup {newest['id']} finished {newest['finished_at']}")
    backup = require_restore(drill)
    evidence.note(
        f"the backup job's backup {backup['id']} restored into a new system in "
        f"{drill.started_in_s or 0:.1f} s"
    )
    assert not drill.report.get("mismatches"), (
        f"backup {backup['id']} must restore to what it recorded (the restore reports: "
        f"{'; '.join(drill.report['mismatches'])})"
    )


@pytest.mark.checklist("BAK-DB-DAILY")
def test_the_schedule_runs_daily_and_its_last_run_succeeded_within_25_hours(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A silently failing backup job is only discovered when a restore is needed."""
    every = schedule_every_s(target)
    evidence.figure("backup schedule interval", every / 3600, "h")
    assert every <= DAY_S, (
        f"the backups of {target.backup_dir} must be scheduled at least daily (got every "
        f"{every / 3600:.1f} h)"
    )
    runs = scheduled_runs(read_catalogue(target.backup_dir))
    assert runs, f"the backup repository {target.backup_dir} must list a scheduled run (got none)"
    last = runs[-1]
    evidence.figure("scheduled runs observed", len(runs))
    gaps = run_gaps(runs)
    if gaps:
        evidence.figure("longest gap between scheduled runs' starts", max(gaps), "s")
    late = [g for g in gaps if g > every + schedule_grace_s(runs)]
    assert not late, (
        f"the schedule must start a run every {every:g} s (got gaps of "
        f"{', '.join(f'{g:.0f} s' for g in late)} between runs)"
    )
    assert last.get("status") == "ok", (
        f"the last scheduled run {last['id']} must have succeeded (got {last.get('status')}: "
        f"{last.get('error')})"
    )
    age = age_s(last)
    evidence.figure("age of the last scheduled run", age / 3600, "h")
    backup_figures(evidence, last)
    assert age < DAILY_MAX_AGE_S, (
        f"the last scheduled backup {last['id']} must be less than 25 h old (got "
        f"{age / 3600:.1f} h, finished {last['finished_at']})"
    )
    # The run after the last is due one interval after the last started; one in progress is
    # listed once it finishes. Past that (and a grace), the schedule has stopped firing.
    overdue = age_s(last, "started_at") - every - schedule_grace_s(runs)
    evidence.note(
        f"{len(runs)} scheduled run(s) listed, the last {last['id']} started "
        f"{last['started_at']}; the next is due {every:g} s after it"
        + ("" if len(runs) > 1 else " (only the run at the schedule's start is observed yet)")
    )
    assert overdue <= 0, (
        f"the schedule must have started the run due {every:g} s after {last['id']} (got none "
        f"listed {overdue + schedule_grace_s(runs):.0f} s past that: the schedule stopped firing)"
    )


@pytest.mark.checklist("BAK-RPO")
def test_the_newest_recoverable_point_is_within_the_rpo(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An RPO that was never checked hides how much data a failure would lose."""
    archiving = (
        target.info.stores.postgres_dsn is not None
        and target.pg.show("archive_mode")["archive_mode"] == "on"
    )
    if archiving:
        # WAL archiving: the original runbook's stricter 15 minutes applies.
        objective = RPO_WAL_OBJECTIVE_S
        archived = target.pg.fetch("SELECT last_archived_time FROM pg_stat_archiver")
        last = archived[0]["last_archived_time"] if archived else None
        assert last is not None, (
            f"PostgreSQL at {target.pg_dsn.rpartition('@')[2]} archives WAL, so the newest "
            "recoverable point is its newest archived segment (got none archived)"
        )
        rpo = (datetime.now(UTC) - last).total_seconds()
        worst = rpo
        evidence.note(f"WAL archiving is on; newest archived segment {last.isoformat()}")
    else:
        objective = RPO_OBJECTIVE_S
        every = schedule_every_s(target)
        newest = scheduled_backups(target, evidence)[-1]
        rpo = age_s(newest, "snapshot_at")
        # A failure just before the next run loses a whole interval plus that run's duration.
        worst = every + float(newest.get("duration_s", 0))
        evidence.note(
            f"no WAL archiving: the newest recoverable point is the snapshot of backup "
            f"{newest['id']} at {newest['snapshot_at']} (scheduled every {every / 3600:.1f} h)"
        )
    evidence.figure("RPO objective", objective / 3600, "h")
    evidence.figure("RPO at the incident (now)", rpo / 60, "min")
    evidence.figure("worst-case RPO of the schedule", worst / 3600, "h")
    assert rpo < objective, (
        f"the newest recoverable point must be less than {objective / 3600:g} h old (got "
        f"{rpo / 3600:.2f} h)"
    )
    assert worst < objective, (
        f"the backup schedule must keep every point within the RPO of {objective / 3600:g} h "
        f"(got a worst case of {worst / 3600:.2f} h: the interval plus one backup)"
    )


@pytest.mark.checklist("POST-BACKUP-RAN")
def test_a_backup_ran_since_the_deploy_and_its_age_is_alerted_on(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """The first backup after launch is the one that silently fails."""
    newest = scheduled_backups(target, evidence)[-1]
    if target.info.deployment.deployed_at is not None:
        deployed, source = target.info.deployment.deployed_at, "as the target reports it"
    else:
        deployed = min(float(w["started_at"]) for w in target.metrics.runtime(evidence).values())
        source = "the oldest API worker's start"
    deployed_at = datetime.fromtimestamp(deployed, UTC)
    finished = parse_time(str(newest["finished_at"]))
    evidence.note(f"deploy ({source}) {deployed_at.isoformat()}")
    evidence.note(f"newest scheduled backup {newest['id']} finished {newest['finished_at']}")
    assert finished > deployed_at, (
        f"a scheduled backup must have succeeded since the deploy at {deployed_at.isoformat()} "
        f"(got the newest, {newest['id']}, at {newest['finished_at']})"
    )
    wanted = finished.timestamp() - 1.0
    values: list[float] = []

    def reported() -> bool:
        values[:] = [float(s["value"][1]) for s in promql(target, BACKUP_GAUGE)]
        return any(v >= wanted for v in values)

    seen = until(reported, WATCH_TIMEOUT_S, interval=SCRAPE_POLL_S)
    evidence.note(f"{BACKUP_GAUGE} in Prometheus: {values or 'absent'}")
    assert seen, (
        f"Prometheus must see {BACKUP_GAUGE} of at least {wanted:.0f} (the newest scheduled "
        f"backup) within 15 s (got {values or 'no series'})"
    )
    rules = [
        r
        for g in prom(target, "/api/v1/rules")["groups"]
        for r in g["rules"]
        if r.get("type") == "alerting" and BACKUP_GAUGE in str(r.get("query"))
    ]
    for rule in rules:
        evidence.note(f"alert {rule['name']}: {rule['query']} (for {rule.get('duration')} s)")
    assert rules, f"Prometheus must have an alerting rule on {BACKUP_GAUGE} (got none loaded)"


# -- the restore drill ---------------------------------------------------------------------------


def _verify_base_backup(target: ProbeTarget, backup_id: str, base: Path) -> tuple[int, str]:
    """pg_verifybackup of a base backup: by the target's own `verify` job where it has one (the
    tools that took the backup, whose manifest format newer servers change), else this host's."""
    if "verify" in target.info.drills.jobs:
        result = target.job("verify").run("--id", backup_id, timeout=JOB_TIMEOUT_S)
        return result.returncode, (result.stdout + result.stderr).strip()
    done = subprocess.run(
        [str(PG_BIN / "pg_verifybackup"), str(base)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.mark.checklist("BAK-VERIFY")
def test_the_newest_backup_restores_into_an_empty_database_with_equal_row_counts(
    target: ProbeTarget, evidence: EvidenceLog, drill: RestoreDrill
) -> None:
    """An unrestorable backup is not a backup."""
    backup = require_restore(drill)
    backup_figures(evidence, backup)
    base = target.backup_dir / str(backup["id"]) / str(backup["database"]["base"]["dir"])
    code, output = _verify_base_backup(target, str(backup["id"]), base)
    evidence.note(f"pg_verifybackup {base}: exit {code}, {output}")
    assert code == 0, (
        f"pg_verifybackup must accept the base backup {base} (got exit {code}: {output[-300:]})"
    )
    rows = drill.restored.get("rows", {})
    evidence.figure("tables compared", len(rows))
    evidence.figure("rows restored", sum(rows.values()))
    evidence.note("rows per table restored: " + ", ".join(f"{t} {n}" for t, n in rows.items()))
    mismatches = restored_mismatches(drill)
    assert not mismatches, (
        f"the restore of backup {backup['id']} must hold what the backup recorded (got "
        f"{'; '.join(mismatches)})"
    )


@pytest.mark.checklist("BAK-FILES")
def test_uploads_are_backed_up_and_restored_byte_for_byte(
    target: ProbeTarget, evidence: EvidenceLog, drill: RestoreDrill
) -> None:
    """Losing the bucket loses every attachment even when the database survives."""
    backup = require_restore(drill)
    uploads = backup.get("uploads", {})
    if "skipped" in uploads:
        pytest.skip(f"the backup job does not copy this upload store: {uploads['skipped']}")
    evidence.figure("uploads in the backup", int(uploads.get("count", 0)))
    evidence.figure("upload bytes in the backup", int(uploads.get("size", 0)), "bytes")
    problems = list(uploads.get("problems", []))
    assert not problems, (
        f"backup {backup['id']} must hold every live upload (got {'; '.join(problems[:5])})"
    )
    conv = drill.conversation
    upload_id, digest, _ = conv.uploads[conv.owner.user_id]
    served = drill.served.upload_sha256 or f"no download: {drill.serve_error or 'not found'}"
    assert drill.served.upload_sha256 == digest, (
        f"the restored system must serve upload {upload_id} with sha256 {digest} (got {served})"
    )
    expected = drill.restored.get("uploads", {})
    wrong = sorted(k for k, h in expected.items() if drill.restored_files.get(k) != h)
    evidence.figure("uploads restored", len(expected))
    assert not wrong, (
        f"every restored upload must have its bytes with the recorded sha256 in the new upload "
        f"store (got {len(wrong)} of {len(expected)} missing or different: {wrong[:3]})"
    )


@pytest.mark.checklist("BAK-RTO")
def test_a_full_restore_completes_within_the_rto(
    evidence: EvidenceLog, drill: RestoreDrill
) -> None:
    """An RTO that was never measured is a wish."""
    backup = require_restore(drill)
    data = drill.dataset
    assert data is not None
    evidence.figure("data set: messages loaded", data.messages)
    evidence.figure("data set: message text", data.text_bytes / MB, "MB")
    evidence.figure("data set: database growth", data.database_growth_bytes / MB, "MB")
    evidence.figure("data set: load (COPY)", round(data.load_s, 1), "s")
    backup_figures(evidence, backup)
    for step, seconds in sorted(drill.report.get("steps", {}).items()):
        evidence.figure(f"restore step {step}", float(seconds), "s")
    restored_messages = int(drill.restored.get("rows", {}).get("messages", 0))
    restored_bytes = drill.restored_database_bytes or 0
    restore_s = float(drill.report.get("duration_s", 0))
    evidence.figure("messages restored", restored_messages)
    evidence.figure("database restored", restored_bytes / MB, "MB")
    evidence.figure("restore job (check, pg_restore, verify)", restore_s, "s")
    pg_restore_s = float(drill.report.get("steps", {}).get("pg_restore_s", 0))
    if pg_restore_s > 0:
        evidence.figure(
            "pg_restore throughput", round(restored_bytes / MB / pg_restore_s, 1), "MB/s"
        )
    if restore_s > 0:
        evidence.figure("restore throughput", round(restored_bytes / MB / restore_s, 1), "MB/s")
        evidence.figure(
            "restore throughput (messages)", round(restored_messages / restore_s), "rows/s"
        )
    evidence.figure("RTO objective", RTO_OBJECTIVE_S / 60, "min")
    full = data.messages >= _dataset.MESSAGES
    carried = restored_messages >= data.messages and (
        data.text_bytes >= _dataset.TEXT_BYTES or not full
    )
    assert carried, (
        f"the restore must carry the data set of {data.messages} messages and "
        f"{_dataset.TEXT_BYTES / MB:.0f} MB of text (got {restored_messages} messages restored, "
        f"{data.text_bytes / MB:.0f} MB loaded)"
    )
    assert drill.rto_s is not None, (
        f"the restored system must serve the restored data through its edge (got "
        f"{drill.serve_error or 'nothing served'})"
    )
    if not full:
        undecided(
            f"the drill restored {data.messages} messages ({_dataset.SIZE_VARIABLE} asked for "
            f"fewer), not the item's {_dataset.MESSAGES}: a restore of that size says nothing "
            "of the RTO"
        )
    evidence.figure(
        "RTO (restore start to data served through the edge)", round(drill.rto_s, 1), "s"
    )
    evidence.note(
        f"restore = a new PostgreSQL (initdb), pg_restore of the newest dump "
        f"({restored_messages} messages, {restored_bytes / MB:.0f} MB restored), the restore "
        "job's check of rows and the message digest, the upload store copied back, Redis, API "
        "worker and edge started, first page of messages served (the drill's own reading of the "
        f"restored database, {drill.measured_s:.1f} s, left out)"
    )
    assert drill.rto_s < RTO_OBJECTIVE_S, (
        f"a full restore must complete within {RTO_OBJECTIVE_S / 60:g} min (got "
        f"{drill.rto_s / 60:.1f} min)"
    )


@pytest.mark.checklist("BAK-RESTORE-DRILL")
def test_a_restore_from_the_newest_backup_recovers_the_service_with_its_data(
    evidence: EvidenceLog, drill: RestoreDrill
) -> None:
    """Recovery procedures that were never exercised fail when needed."""
    backup = require_restore(drill)
    conv = drill.conversation
    assert drill.incident_at is not None
    evidence.note(f"incident declared {drill.incident_at.isoformat()}; restored {backup['id']}")
    evidence.figure(
        "age of the restored backup at the incident",
        (drill.incident_at - parse_time(str(backup["snapshot_at"]))).total_seconds(),
        "s",
    )
    assert not drill.serve_error, (
        f"the restored system must serve the conversation through its edge (got "
        f"{drill.serve_error})"
    )
    sent = conv.texts[conv.owner.user_id] + conv.texts[conv.member.user_id]
    assert drill.served.texts == sent, (
        f"the restored channel must hold the {len(sent)} messages sent before the backup, in "
        f"order (got {drill.served.texts})"
    )
    assert drill.lost_text not in drill.served.texts, (
        "the restore must be the backup's point in time (got a message written after it)"
    )
    for user, other in ((conv.owner, conv.member), (conv.member, conv.owner)):
        message = conv.message_ids[other.user_id][0]
        reactions = drill.served.reactions.get(message, {})
        assert reactions.get(conv.emoji[user.user_id]) == 1, (
            f"restored message {message} must carry the reaction {conv.emoji[user.user_id]} "
            f"(got {reactions})"
        )
    votes = {option: drill.served.votes.get(option) for option in conv.votes.values()}
    assert all(v == 1 for v in votes.values()), (
        f"restored poll {conv.poll_id} must count one vote per option voted (got {votes})"
    )
    mismatches = restored_mismatches(drill)
    assert not mismatches, (
        f"the restore of backup {backup['id']} must hold what the backup recorded (got "
        f"{'; '.join(mismatches)})"
    )


# -- retention, off-site, Redis ------------------------------------------------------------------


@pytest.mark.checklist("BAK-RETENTION")
def test_backups_past_30_days_are_pruned_and_newer_ones_kept(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Unbounded backups fill storage; over-pruning loses the restore point you need."""
    repository = target.backup_dir
    target.job("backup")
    now = datetime.now(UTC)
    planted = {
        "expired": now - timedelta(days=RETENTION_DAYS + 1),
        "kept": now - timedelta(days=RETENTION_DAYS - 1),
    }
    ids = {name: f"{at:%Y%m%dT%H%M%SZ}-probe{name}" for name, at in planted.items()}
    # Two backups as the catalogue would list them, 31 and 29 days old (metadata and a marker
    # file; the job prunes by the catalogue's times, not by the contents).
    with locked(repository):
        catalogue = read_catalogue(repository)
        for name, at in planted.items():
            (repository / ids[name]).mkdir(mode=0o700)
            (repository / ids[name] / "planted-by-preflight").write_text(name)
            own_like_repository(
                repository, repository / ids[name], repository / ids[name] / "planted-by-preflight"
            )
            catalogue.setdefault("backups", []).append(
                {
                    "id": ids[name],
                    "trigger": "probe",
                    "status": "ok",
                    "started_at": at.isoformat(),
                    "finished_at": at.isoformat(),
                    "snapshot_at": at.isoformat(),
                    "duration_s": 0.0,
                    "size_bytes": 0,
                    "files": {},
                }
            )
        write_catalogue(repository, catalogue)
    try:
        entry, error = run_backup(target)
        assert entry is not None, f"the backup job must succeed to prune ({error})"
        evidence.note(f"backup {entry['id']} pruned {entry.get('pruned')}")
        listed = {str(b["id"]) for b in read_catalogue(repository).get("backups", [])}
        evidence.figure("backups in the repository", len(listed))
        for name in ("expired", "kept"):
            evidence.note(f"{name}: {ids[name]} listed {ids[name] in listed}")
        expired = ids["expired"] in listed or (repository / ids["expired"]).exists()
        assert not expired, (
            f"the backup job must prune backup {ids['expired']}, {RETENTION_DAYS + 1} days old "
            f"(got it still {'listed' if ids['expired'] in listed else 'on disk'})"
        )
        kept = ids["kept"] in listed and (repository / ids["kept"]).exists()
        assert kept, (
            f"the backup job must keep backup {ids['kept']}, {RETENTION_DAYS - 1} days old, "
            f"within the {RETENTION_DAYS}-day retention (got it pruned)"
        )
    finally:
        with locked(repository):
            catalogue = read_catalogue(repository)
            catalogue["backups"] = [
                b for b in catalogue.get("backups", []) if b.get("id") not in ids.values()
            ]
            write_catalogue(repository, catalogue)
        for backup_id in ids.values():
            marker = repository / backup_id / "planted-by-preflight"
            if marker.exists():
                marker.unlink()
                (repository / backup_id).rmdir()


@pytest.mark.checklist("BAK-OFFSITE")
def test_backups_are_copied_outside_the_database_host(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Backups on the same host die with it."""
    repository = target.backup_dir
    newest = successful(read_catalogue(repository))
    assert newest, f"the backup repository {repository} must hold a successful backup (got none)"
    entry = newest[-1]
    offsite = target.info.backups.offsite_dir
    if offsite is None:
        assert not target.info.backups.on_database_host, (
            f"the newest backup {entry['id']} must have a copy outside the database's host "
            f"(got every backup in {repository}: the target keeps its "
            "backups on the database's host, so no copy is in another failure domain)"
        )
        pytest.skip(
            f"target {target.info.name} keeps its backups in {repository}; give "
            "backup_offsite_dir (a copy in another failure domain, readable from here) in the "
            "target file to decide this item"
        )
    copy = offsite / str(entry["id"])
    differing = [
        relative
        for relative, recorded in sorted(entry.get("files", {}).items())
        if not (copy / relative).is_file() or sha256_file(copy / relative) != recorded["sha256"]
    ]
    evidence.note(f"newest backup {entry['id']}; off-site copy {copy}")
    evidence.figure("files compared", len(entry.get("files", {})))
    equal = copy.is_dir() and not differing
    assert equal, (
        f"the newest backup {entry['id']} must have an equal copy in {offsite} (got "
        f"{'no copy' if not copy.is_dir() else 'different or missing: ' + ', '.join(differing)})"
    )


@pytest.mark.checklist("INF-REDIS-BACKUP")
def test_redis_persists_and_its_snapshot_is_in_the_backups(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Losing Redis data on a host failure can reset limits and state unexpectedly."""
    persistence = target.redis.info("persistence")
    aof = int(persistence.get("aof_enabled", 0)) == 1
    status = persistence.get("aof_last_write_status" if aof else "rdb_last_bgsave_status")
    evidence.note(f"Redis persistence: {'AOF' if aof else 'RDB'}, last write {status}")
    assert status == "ok", f"Redis must write its persistence files (got last write {status})"
    newest = scheduled_backups(target, evidence)[-1]
    redis = newest.get("redis", {})
    assert "file" in redis, (
        f"the newest scheduled backup {newest['id']} must hold a Redis snapshot (got "
        f"{redis.get('error') or redis.get('skipped') or 'none'})"
    )
    rdb = target.backup_dir / str(newest["id"]) / str(redis["file"])
    check = subprocess.run(
        ["redis-check-rdb", str(rdb)], capture_output=True, text=True, timeout=300, check=False
    )
    evidence.figure("Redis snapshot size", int(redis.get("size", 0)), "bytes")
    assert check.returncode == 0, (
        f"redis-check-rdb must accept {rdb} (got exit {check.returncode}: "
        f"{check.stdout.strip()[-300:]})"
    )
    offsite = target.info.backups.offsite_dir
    if offsite is None:
        assert not target.info.backups.on_database_host, (
            f"the Redis snapshot of backup {newest['id']} must be copied off the host (got it "
            f"only in {target.backup_dir}, on the database's host)"
        )
        pytest.skip(
            f"Redis persists ({'AOF' if aof else 'RDB'}) and backup {newest['id']} holds a "
            f"valid snapshot in {target.backup_dir}; give backup_offsite_dir in the target file "
            "to decide whether it is copied off the host"
        )
    copy = offsite / str(newest["id"]) / str(redis["file"])
    copied = copy.is_file() and sha256_file(copy) == redis["sha256"]
    assert copied, (
        f"the Redis snapshot of backup {newest['id']} must be copied to {offsite} (got "
        f"{'a different file' if copy.is_file() else 'no copy'})"
    )
