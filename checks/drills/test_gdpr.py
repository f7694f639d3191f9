"""The data lifecycle of one person: their export holds everything stored about them and nothing
of anyone else; erasing them leaves nothing personal in any store (PostgreSQL, upload storage,
Redis, the logs written afterwards) and ends their tokens; the retention job deletes data past
its period and keeps newer data."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from checks._chat import call, send
from checks.drills._backup import Conversation, converse, sha256_file
from preflight.client import expect
from preflight.evidence import EvidenceLog
from preflight.probe.pg import Postgres
from preflight.probe.redis import Redis
from preflight.probe.target import ProbeTarget

# The drill's time budget per phase, with room for a busy machine: exports and erasures of a
# seeded user through the public API.
pytestmark = pytest.mark.budget(600)

MAX_REDIS_KEYS = 20000
JOB_TIMEOUT_S = 600.0


def export_of(target: ProbeTarget, conv: Conversation) -> tuple[dict[str, Any], str]:
    response = call(conv.owner.client, "GET", "/v1/me/export")
    archive = expect(response, 200)
    return archive, response.body.decode()


def missing(what: str, wanted: set[Any], got: set[Any]) -> str | None:
    lost = wanted - got
    return f"{what} {sorted(map(str, lost))}" if lost else None


@pytest.mark.checklist("CMP-DATA-EXPORT")
def test_a_users_export_holds_everything_about_them_and_nothing_of_others(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A broken export fails access requests; a leaky one is a breach."""
    conv = converse(target, "export")
    me, other = conv.owner.user_id, conv.member.user_id
    archive, raw = export_of(target, conv)
    evidence.figure("export size", len(raw), "bytes")
    for section in ("messages", "reactions", "votes", "uploads", "polls_created", "channels"):
        evidence.figure(f"export {section}", len(archive.get(section) or []))
    profile = archive.get("profile") or {}
    upload_id, digest, _ = conv.uploads[me]
    gaps = [
        missing("profile", {(me, conv.names[me])}, {(profile.get("user_id"), profile.get("name"))}),
        missing(
            "messages",
            set(conv.texts[me]),
            {m.get("text") for m in archive.get("messages") or []},
        ),
        missing(
            "reactions",
            {(conv.message_ids[other][0], conv.emoji[me])},
            {(r.get("message_id"), r.get("emoji")) for r in archive.get("reactions") or []},
        ),
        missing(
            "votes",
            {(conv.poll_id, conv.votes[me])},
            {(v.get("poll_id"), v.get("option_id")) for v in archive.get("votes") or []},
        ),
        missing(
            "uploads",
            {(upload_id, digest)},
            {(u.get("upload_id"), u.get("sha256")) for u in archive.get("uploads") or []},
        ),
        missing(
            "polls created",
            {conv.question},
            {p.get("question") for p in archive.get("polls_created") or []},
        ),
        missing(
            "channels",
            {conv.channel_id},
            {c.get("channel_id") for c in archive.get("channels") or []},
        ),
    ]
    found_gaps = [g for g in gaps if g]
    assert not found_gaps, (
        f"the export of user {me} must hold everything stored about them (missing: "
        f"{'; '.join(found_gaps)})"
    )
    others = [
        *conv.personal(other),
        conv.emoji[other],
        conv.votes[other],
        conv.uploads[other][0],
    ]
    leaked = [s for s in others if s in raw]
    assert not leaked, (
        f"the export of user {me} must hold nothing of user {other} in the same channel (got "
        f"{leaked})"
    )


# -- erasure ------------------------------------------------------------------------------------


def log_offsets(files: tuple[Path, ...]) -> dict[Path, int]:
    return {f: f.stat().st_size if f.exists() else 0 for f in files}


def written_since(offsets: dict[Path, int]) -> dict[Path, str]:
    text = {}
    for path, offset in offsets.items():
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                text[path] = f.read().decode(errors="replace")
    return text


def postgres_holding(pg: Postgres, needles: list[str]) -> dict[str, list[str]]:
    """table -> the needles found anywhere in its rows (the row as text: every column)."""

    async def search(conn: asyncpg.Connection) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        tables = await conn.fetch(
            "SELECT tablename, quote_ident(tablename) AS q FROM pg_tables "
            "WHERE schemaname = 'public' ORDER BY tablename"
        )
        for table in tables:
            sql = (
                f"SELECT n FROM unnest($1::text[]) n WHERE EXISTS "  # noqa: S608 - quote_ident
                f"(SELECT 1 FROM public.{table['q']} x WHERE strpos(x::text, n) > 0)"
            )
            hits = [str(r["n"]) for r in await conn.fetch(sql, needles)]
            if hits:
                found[str(table["tablename"])] = hits
        return found

    return pg.run(search)


def redis_holding(store: Redis, user_id: str, needles: list[str]) -> list[str]:
    """Keys that name the user (as a whole segment) or whose string value holds a needle."""
    names_user = re.compile(rf"(?:^|[:{{}}|/]){re.escape(user_id)}(?:$|[:{{}}|/])")
    found = []
    with store.client() as client:
        for n, key in enumerate(client.scan_iter(count=1000)):
            if n >= MAX_REDIS_KEYS:
                break
            name = key.decode(errors="replace")
            if names_user.search(name):
                found.append(name)
            elif client.type(key) == b"string":
                value = (client.get(key) or b"").decode(errors="replace")
                if any(needle in value for needle in needles):
                    found.append(f"{name} (value)")
    return found


@pytest.mark.checklist("CMP-ERASURE")
def test_erasing_a_user_leaves_nothing_personal_in_any_store(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An erasure that leaves data behind breaks the right to erasure and feeds any breach."""
    conv = converse(target, "erase")
    me = conv.owner.user_id
    needles = [*conv.personal(me), conv.emoji[me], conv.question]
    upload_id, digest, content = conv.uploads[me]
    keys = target.pg.fetch("SELECT storage_key FROM uploads WHERE id = $1", upload_id)
    offsets = log_offsets(target.info.observability.log_files)
    erased = call(conv.tenant.client, "DELETE", f"/v1/users/{me}")
    evidence.request(erased)
    expect(erased, 204)
    # Life goes on in the channel after the erasure; none of it may bring the user's data back.
    send(conv.member, conv.channel_id, "after the erasure")
    expect(call(conv.member.client, "GET", f"/v1/channels/{conv.channel_id}/messages"), 200)
    time.sleep(0.5)  # let the workers and the edge write their log lines

    problems: list[str] = []
    me_now = call(conv.owner.client, "GET", "/v1/me")
    refreshed = call(
        conv.tenant.client,
        "POST",
        "/v1/tokens/refresh",
        json={"refresh_token": conv.owner.refresh_token},
    )
    evidence.note(f"after erasure: GET /v1/me {me_now.status}, refresh {refreshed.status}")
    if me_now.status != 401 or refreshed.status != 401:
        problems.append(
            f"tokens still work (GET /v1/me {me_now.status}, refresh {refreshed.status})"
        )
    in_postgres = postgres_holding(target.pg, needles)
    owned = target.pg.fetch(
        "SELECT 'reactions' AS t, count(*) AS n FROM reactions WHERE user_id = $1 "
        "UNION ALL SELECT 'poll_votes', count(*) FROM poll_votes WHERE user_id = $1 "
        "UNION ALL SELECT 'channel_members', count(*) FROM channel_members WHERE user_id = $1 "
        "UNION ALL SELECT 'refresh_tokens', count(*) FROM refresh_tokens WHERE user_id = $1 "
        "UNION ALL SELECT 'live uploads', count(*) FROM uploads "
        "WHERE user_id = $1 AND deleted_at IS NULL",
        me,
    )
    rows = {str(r["t"]): int(r["n"]) for r in owned if int(r["n"])}
    if in_postgres or rows:
        problems.append(f"PostgreSQL holds {in_postgres or ''} {rows or ''}".strip())
    evidence.figure("PostgreSQL tables holding the user's data", len(in_postgres) + len(rows))
    if target.info.stores.upload_dir is not None:
        store = target.info.stores.upload_dir
        key = str(keys[0]["storage_key"]) if keys else ""
        leftovers = [
            str(p)
            for p in store.glob("*/*")
            if p.is_file()
            and (p.name == key or (p.stat().st_size == len(content) and sha256_file(p) == digest))
        ]
        if leftovers:
            problems.append(f"the upload store still has the upload's bytes at {leftovers}")
    else:
        evidence.note("the target gives no upload_dir: the upload store was not searched")
    in_redis = redis_holding(target.redis, me, needles)
    if in_redis:
        problems.append(f"Redis holds {in_redis[:10]}")
    logged = {
        str(path): [n for n in needles if n in text]
        for path, text in written_since(offsets).items()
    }
    logged = {path: hits for path, hits in logged.items() if hits}
    if logged:
        problems.append(f"logs written after the erasure hold {logged}")
    evidence.figure(
        "stores searched", 3 + len(offsets) + (target.info.stores.upload_dir is not None)
    )
    assert not problems, (
        f"after erasing user {me} nothing personal may remain and their tokens must fail (got "
        f"{'; '.join(problems)})"
    )


# -- retention ----------------------------------------------------------------------------------


def run_retention(target: ProbeTarget) -> dict[str, Any]:
    __tracebackhide__ = True
    result = target.job("retention").run(timeout=JOB_TIMEOUT_S)
    assert result.returncode == 0, (
        f"the retention job must run (got exit {result.returncode}: "
        f"{(result.stderr or result.stdout).strip()[-300:]})"
    )
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.checklist("CMP-RETENTION")
def test_the_retention_job_deletes_data_past_its_period_and_keeps_newer_data(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Keeping data longer than stated breaks the privacy policy and enlarges any breach."""
    policy = run_retention(target)["policy"]
    evidence.note(f"retention policy: {json.dumps(policy)}")
    forever = [k for k in ("messages_days", "uploads_days") if not policy.get(k)]
    assert not forever, (
        f"the retention policy must give messages and uploads a retention period (got {forever} "
        "kept for ever)"
    )
    conv = converse(target, "retention")
    me = conv.owner.user_id
    old, new = conv.message_ids[me]  # the first carries the owner's upload
    upload_id = conv.uploads[me][0]
    days = {"messages": int(policy["messages_days"]), "uploads": int(policy["uploads_days"])}

    async def backdate(conn: asyncpg.Connection) -> None:
        # One day past the period for the old message and the upload, one day within it for the
        # new message.
        for message, age in ((old, days["messages"] + 1), (new, days["messages"] - 1)):
            await conn.execute(
                "UPDATE messages SET created_at = now() - make_interval(days => $2) WHERE id = $1",
                message,
                age,
            )
        await conn.execute(
            "UPDATE uploads SET created_at = now() - make_interval(days => $2) WHERE id = $1",
            upload_id,
            days["uploads"] + 1,
        )

    target.pg.run(backdate)
    report = run_retention(target)
    evidence.note(f"retention job deleted: {json.dumps(report['deleted'])}")
    evidence.figure("retention job duration", float(report.get("duration_s", 0)), "s")
    page = expect(
        call(conv.member.client, "GET", f"/v1/channels/{conv.channel_id}/messages?limit=200"),
        200,
    )
    texts = {m["message_id"]: m.get("text") for m in page["messages"]}
    rows = {
        str(r["id"]): (r["text"], int(r["reactions"]))
        for r in target.pg.fetch(
            "SELECT m.id, m.text, (SELECT count(*) FROM reactions r WHERE r.message_id = m.id) "
            "AS reactions FROM messages m WHERE m.id = any($1::text[])",
            [old, new],
        )
    }
    download = call(conv.owner.client, "GET", f"/v1/uploads/{upload_id}")  # the uploader's
    evidence.note(
        f"past retention: message {old} text {rows[old][0]!r}, {rows[old][1]} reactions, "
        f"upload {upload_id} -> {download.status}; within: message {new} text {rows[new][0]!r}"
    )
    assert rows[old] == (None, 0), (
        f"the retention job must delete message {old}, {days['messages'] + 1} days old (policy "
        f"{days['messages']} days), with its reactions (got text {rows[old][0]!r}, "
        f"{rows[old][1]} reactions)"
    )
    assert download.status == 404, (
        f"the retention job must delete upload {upload_id}, {days['uploads'] + 1} days old "
        f"(policy {days['uploads']} days) (got GET {download.status})"
    )
    assert texts.get(new) == conv.texts[me][1], (
        f"the retention job must keep message {new}, {days['messages'] - 1} days old, within "
        f"its {days['messages']}-day period (got text {texts.get(new)!r})"
    )
