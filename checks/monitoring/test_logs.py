"""The target's real logs: the edge's access log, the API's JSON lines with request ids, audit
records of administrative actions, every component's events in the central log store, no
secrets anywhere, and rotation configured."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import yaml

from checks._chat import Tenant
from checks.monitoring._monitoring import (
    REPO,
    Monitoring,
    is_api,
    is_edge_access,
    last_lines,
    run,
    tool,
)
from preflight.client import expect
from preflight.evidence import EvidenceLog
from preflight.jsonlines import json_object
from preflight.probe.target import ProbeTarget
from preflight.targets.base import LogStore, StoredEvent

FLUSH_S = 1.0  # how long the log writers get to flush before the logs are read whole


def tagged() -> str:
    return f"preflight-{secrets.token_hex(8)}"


@pytest.mark.checklist("MON-ACCESS-LOG")
@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/v1/health/ready", 200, id="api-200"),
        pytest.param("/v1/channels", 401, id="api-401"),
        pytest.param("/no-such-page", 404, id="edge-404"),
    ],
)
def test_edge_logs_every_request_with_status_latency_and_id(
    target: ProbeTarget, evidence: EvidenceLog, path: str, status: int
) -> None:
    """Without access logs there is no record of who called what."""
    target.requires("logs")
    request_id = tagged()
    response = target.http.get(path, headers={"X-Request-ID": request_id})
    evidence.request(response)
    found = target.logs.find(lambda r: is_edge_access(r) and r.get("request_id") == request_id)
    assert found, (
        f"the edge's access log must have a line for GET {path} with request_id {request_id} "
        "(got none)"
    )
    where, record = found[0]
    evidence.note(f"{where.name}: {record}")
    assert record.get("status") == response.status, (
        f"the access-log line of GET {path} must record status {response.status} "
        f"(got {record.get('status')!r})"
    )
    latency = record.get("request_time")
    assert isinstance(latency, int | float), (
        f"the access-log line of GET {path} must record the latency (got {latency!r})"
    )


@pytest.mark.checklist("DEP-LOGS-FLOWING")
def test_a_request_id_reaches_the_api_logs(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A deploy that breaks logging removes the evidence needed for the next incident."""
    target.requires("logs")
    request_id = tagged()
    response = target.http.get("/v1/health/ready", headers={"X-Request-ID": request_id})
    evidence.request(response)
    found = target.logs.find(lambda r: is_api(r) and r.get("request_id") == request_id)
    assert found, (
        f"the API's logs must hold a record with request_id {request_id} after GET "
        f"/v1/health/ready through the edge (got none in {len(target.logs.files)} log files)"
    )
    evidence.note(f"{found[0][0].name}: {found[0][1]}")


AUDITED = ("key.create", "user.export", "user.erase")


def _audit_of(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("event") == "audit" and r.get("request_id") == request_id


@pytest.mark.checklist("MON-AUDIT-LOG")
def test_admin_actions_write_audit_records(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Without an audit trail, abuse by insiders or with stolen admin keys cannot be traced."""
    target.requires("logs")
    world = Tenant.create(target)
    ids = {action: tagged() for action in AUDITED}
    admin = target.http.as_admin(target.admin_key)
    created = admin.post(
        f"/v1/apps/{world.app_id}/keys", headers={"X-Request-ID": ids["key.create"]}
    )
    evidence.request(created)
    expect(created, 201)
    user = world.user("audited")
    exported = user.client.get("/v1/me/export", headers={"X-Request-ID": ids["user.export"]})
    evidence.request(exported)
    expect(exported, 200)
    erased = world.client.delete(
        f"/v1/users/{user.user_id}", headers={"X-Request-ID": ids["user.erase"]}
    )
    evidence.request(erased)
    expect(erased, 204)
    for action, request_id in ids.items():
        found = target.logs.find(_audit_of(request_id))
        assert found, (
            f"{action} (request {request_id}) must write an audit record with "
            '"event": "audit" (got none)'
        )
        record: dict[str, Any] = found[0][1]
        evidence.note(f"{action}: {record}")
        missing = [f for f in ("ts", "actor", "action", "subject") if not record.get(f)]
        assert not missing, (
            f"the audit record of {action} must name {', '.join(missing)} (got {record})"
        )
        assert record["action"] == action, (
            f"the audit record of request {request_id} must say action {action!r} "
            f"(got {record['action']!r})"
        )
    if "log_store" in target.capabilities:  # the copy a host's own users cannot rewrite
        _audit_reaches_the_store(target, ids, evidence)


def _audit_reaches_the_store(
    target: ProbeTarget, ids: dict[str, str], evidence: EvidenceLog
) -> None:
    """Each action's audit record must also be in the central log store."""
    store = target.info.observability.log_store
    assert store is not None
    deadline, pending = time.monotonic() + CENTRAL_DEADLINE_S, dict(ids)
    while pending and time.monotonic() < deadline:
        for action, request_id in list(pending.items()):
            events = store.search(request_id)
            if any(_audit_of(request_id)(json_object(e.message) or {}) for e in events):
                del pending[action]
        time.sleep(CENTRAL_POLL_S)
    assert not pending, (
        f"the audit records of {', '.join(pending)} must reach the central log store at "
        f"{store.address} within {CENTRAL_DEADLINE_S:.0f} s (got none there)"
    )
    evidence.note(f"every audit record is in the central log store at {store.address}")


@pytest.mark.checklist("MON-LOG-CENTRAL")
def test_every_component_ships_its_logs_to_the_central_store(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Scattered logs make incidents slow to diagnose; every component must ship to one store."""
    # Each component's fresh event must reach the central store over the network, and the
    # request records as JSON with the request id.
    target.requires("log_store")
    store = target.info.observability.log_store
    assert store is not None
    evidence.note(f"central log store at {store.address}")
    since, wanted = time.time(), shipped_events(target, tagged())
    found: dict[str, StoredEvent] = {}
    latency: dict[str, float] = {}
    deadline = time.monotonic() + CENTRAL_DEADLINE_S
    while len(found) < len(wanted) and time.monotonic() < deadline:
        for component, event in wanted.items():
            if component not in found and (hit := event.find(store, since)) is not None:
                found[component], latency[component] = hit, time.monotonic() - event.at
        time.sleep(CENTRAL_POLL_S)
    for component, hit in found.items():
        evidence.figure(f"{component} shipping latency", round(latency[component], 2), "s")
        evidence.note(f"{component}: {hit}")
    missing = [c for c in wanted if c not in found]
    assert not missing, (
        f"the central log store at {store.address} must receive a fresh event from every "
        f"component within {CENTRAL_DEADLINE_S:.0f} s; nothing arrived from "
        f"{', '.join(f'{c} ({wanted[c].what})' for c in missing)}"
    )
    local = {c: e.input for c, e in found.items() if e.input not in NETWORK_INPUTS}
    assert not local, (
        f"every component must ship to the central store over the network (an input of "
        f"{', '.join(NETWORK_INPUTS)}); {', '.join(f'{c} came by {i}' for c, i in local.items())}"
    )
    for component in ("edge", "api"):
        record = json_object(found[component].message) or {}
        assert record.get("request_id") == wanted[component].text, (
            f"the {component}'s event in the central store must be a JSON record with the "
            f"request id {wanted[component].text} (got {found[component].message[:200]!r})"
        )


CENTRAL_DEADLINE_S = 30.0  # shipping is near-real-time; this bounds a slow, shared machine
CENTRAL_POLL_S = 0.25
NETWORK_INPUTS = ("imtcp", "imudp", "imptcp", "imrelp")
REDIS_SAVE = "Background saving started"


@dataclass(frozen=True)
class Expected:
    """A component's event the probe caused: its syslog APP-NAME in the store, the text its
    message holds, when it was caused (monotonic), and what it is, for a person."""

    app: str
    text: str
    at: float
    what: str

    def find(self, store: LogStore, since: float) -> StoredEvent | None:
        """The first event of this component with the text, received since `since`."""
        return next(
            (e for e in store.search(self.text) if e.app == self.app and e.received >= since),
            None,
        )


def shipped_events(target: ProbeTarget, marker: str) -> dict[str, Expected]:
    """Cause one fresh event in each component: a request with `marker` as its request id (the
    edge's and the API's access records), a PostgreSQL warning carrying `marker`, and a Redis
    background save (Redis logs no text of a client's at its log level; a save's start is the
    event, fresh by its time)."""
    at = time.monotonic()
    expect(target.http.get("/v1/health/live", headers={"X-Request-ID": marker}), 200)
    events = {
        "edge": Expected("nginx", marker, at, f"the access record of request {marker}"),
        "api": Expected("chatsdk", marker, at, f"the access record of request {marker}"),
    }
    at = time.monotonic()
    target.pg.fetch(f"DO $$BEGIN RAISE WARNING '{marker}'; END$$")
    events["postgres"] = Expected("postgres", marker, at, f"the warning {marker}")
    events["redis"] = Expected("redis", REDIS_SAVE, _background_save(target), REDIS_SAVE)
    return events


def _background_save(target: ProbeTarget) -> float:
    """BGSAVE, again while another save runs (a backup's); when it started (monotonic)."""
    client = target.redis.client()
    deadline = time.monotonic() + CENTRAL_DEADLINE_S
    while True:
        at = time.monotonic()
        try:
            client.bgsave()
            return at
        except redis.ResponseError as exc:
            if "in progress" not in str(exc) or at > deadline:
                raise
        time.sleep(CENTRAL_POLL_S)


@pytest.mark.checklist("MON-LOG-CENTRAL")
def test_no_secret_reaches_any_log(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Tokens, keys and passwords in logs are credentials for whoever can read the logs."""
    files = target.logs.files
    world = Tenant.create(target)
    user = world.user("secretive")
    created = expect(target.http.as_admin(target.admin_key).post("/v1/apps", {"name": "x"}), 201)
    api_key = str(created["api_key"])
    # Credentials where they do not belong: in query strings and paths, and a wrong admin key.
    target.http.get(f"/v1/channels?access_token={user.access_token}&api_key={api_key}")
    target.http.get(f"/v1/apps/{api_key}/keys")
    target.http.as_admin(target.admin_key + "x").post("/v1/apps", {"name": "y"})
    target.http.as_user(user.access_token).get(f"/v1/users/{user.access_token}")
    wanted = {
        "admin key": target.admin_key,
        "API key": api_key,
        "API key secret": api_key.split(".", 1)[-1],
        "access token": user.access_token,
        **{f"password {i}": s for i, s in enumerate(target.secrets[1:], 1)},
    }
    time.sleep(FLUSH_S)  # let the writers flush
    lines = 0
    for path, line in target.logs.lines():
        lines += 1
        _no_secret_in(f"log {path.name}", line, wanted)
    evidence.figure("log lines read", lines)
    store = target.info.observability.log_store
    if store is not None:  # the central store holds a copy of every line: no secret there either
        events = store.search("")
        for event in events:
            _no_secret_in(f"the central log store's event from {event.app}", event.message, wanted)
        evidence.figure("central log store events read", len(events))
    evidence.figure("log files read", len(files))


def _no_secret_in(where: str, line: str, wanted: dict[str, str]) -> None:
    for what, value in wanted.items():
        # The message names the place, never the line: it would carry the secret along.
        field = next((k for k, v in _fields(line).items() if value in v), "the line")
        leaked = value in line  # asserted as a bool: pytest would print both strings
        assert not leaked, (
            f"{where} must not contain the {what} (found it in {field} of a line "
            f"with request_id {_fields(line).get('request_id', 'unknown')})"
        )


def _fields(line: str) -> dict[str, str]:
    """A JSON log line's top-level fields as text (empty for other lines)."""
    record = json_object(line) or {}
    return {str(k): str(v) for k, v in record.items()}


ROTATION = REPO / "system" / "deploy" / "docker-compose.yml"
SIZE_BOUND = re.compile(r"log files >= \d+ are rotated|\d+ bytes \(\d+ rotations\)")
_PATTERN = re.compile(r"^rotating pattern: (.+?)\s+(?:after|forced|hourly|weekly|monthly|yearly)")


@pytest.mark.checklist("MON-LOG-ROTATION")
def test_log_files_are_rotated_and_bounded(monitoring: Monitoring, evidence: EvidenceLog) -> None:
    """Unrotated logs fill the disk and stop the service."""
    config = monitoring.dir / "logrotate" / "chatsdk"
    assert config.is_file(), f"a logrotate config must exist at {config} (got no file)"
    with_state = ["--debug", "--state", "/dev/null", str(config)]
    code, out = run([tool("logrotate"), *with_state])
    evidence.attach("logrotate --debug", out, "text/plain")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 0, f"logrotate must accept {config} (got exit {code}: {last_lines(out)})"
    assert not errors, f"logrotate must accept {config} without errors (got {errors[0]})"
    blocks = re.split(r"\n(?=rotating pattern: )", out)
    patterns = []
    for block in blocks:
        match = _PATTERN.match(block)
        if not match:
            continue
        patterns.append(match[1])
        kept = re.search(r"\((\d+) rotations\)", block)
        rotations = int(kept[1]) if kept else 0
        assert rotations >= 1, (
            f"logrotate pattern {match[1]} must keep a bounded number of rotations (got none)"
        )
        assert SIZE_BOUND.search(block), (
            f"logrotate pattern {match[1]} must bound the size of a log with size or maxsize "
            "(got only a time schedule)"
        )
    covered = " ".join(patterns)
    for log in ("access", "chatsdk/"):
        assert log in covered, (
            f"logrotate config {config.name} must cover the {log.strip('/')} logs "
            f"(got patterns {patterns})"
        )
    if ROTATION.is_file():
        services = (yaml.safe_load(ROTATION.read_text()) or {}).get("services") or {}
        for name, service in services.items():
            options = ((service or {}).get("logging") or {}).get("options") or {}
            bounded = bool(options.get("max-size")) and bool(options.get("max-file"))
            assert bounded, (
                f"service {name} in {ROTATION.name} must bound its logs with logging.options "
                f"max-size and max-file (got {options or 'no logging options'})"
            )
        evidence.note(f"{ROTATION.name}: {len(services)} services bound their logs")
    else:
        evidence.note(f"{ROTATION} does not exist; only the logrotate config was checked")
