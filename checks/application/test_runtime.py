"""The running configuration of every API worker: production settings, no placeholders, and
dependencies that point where the deployment says and answer."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from preflight.client import Response, polite
from preflight.evidence import EvidenceLog
from preflight.polling import poll
from preflight.probe.target import ProbeTarget

QUIET_LOG_LEVELS = {"INFO", "WARNING", "ERROR"}
MIN_SECRET_LENGTH = 32
LEAKS = ("Traceback (most recent call last)", 'File "/', '.py", line', "asyncpg.", "aiohttp.")


@pytest.mark.checklist("APP-ENV-PRODUCTION-CONFIG")
def test_workers_run_without_debug_switches_and_with_a_strict_origin_list(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Development switches in production slow every request and widen the attack surface."""
    for worker, report in target.metrics.runtime(evidence).items():
        config = report["config"]
        assert not config["asyncio_debug"], f"worker {worker} must not run asyncio in debug mode"
        assert not config["python_dev_mode"], f"worker {worker} must not run in Python dev mode"
        # The deployment's own origin is allowed whatever its name (a test deployment's edge may
        # be https://localhost:<port>); a development origin beside it is not.
        own = f"{urlsplit(target.edge_url).scheme}://{urlsplit(target.edge_url).netloc}"
        loose = [
            o
            for o in config["allowed_origins"]
            if o == "*" or not o.startswith("https://") or ("localhost" in o and o != own)
        ]
        assert not loose, (
            f"worker {worker} must allow only https origins of the deployment (got {loose})"
        )


@pytest.mark.checklist("APP-LOG-LEVEL")
def test_every_worker_logs_at_info_or_above(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Debug logging in production floods storage and writes request data where it should not."""
    for worker, report in target.metrics.runtime(evidence).items():
        level = str(report["config"]["log_level"]).upper()
        assert level in QUIET_LOG_LEVELS, (
            f"the log level of worker {worker} must be one of {sorted(QUIET_LOG_LEVELS)} "
            f"(got {level})"
        )


@pytest.mark.checklist("APP-ENV-NO-PLACEHOLDERS")
def test_no_secret_is_a_placeholder_or_short(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A placeholder secret from an example file lets anyone forge tokens or act as admin."""
    for worker, report in target.metrics.runtime(evidence).items():
        for name, hygiene in report["secrets"].items():
            assert not hygiene["placeholder"], (
                f"{name} of worker {worker} must not be a placeholder value (it looks like one)"
            )
            assert hygiene["length"] >= MIN_SECRET_LENGTH, (
                f"{name} of worker {worker} must be at least {MIN_SECRET_LENGTH} characters "
                f"(got {hygiene['length']})"
            )


def _leaks(response: Response) -> list[str]:
    text = response.body.decode(errors="replace")
    return [marker for marker in LEAKS if marker in text]


@pytest.mark.checklist("APP-ENV-MODE")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/v1/apps", b'{"name": ', id="truncated-json"),
        pytest.param("POST", "/v1/apps", b"\xff\xfe\x00", id="invalid-utf8"),
        pytest.param("GET", "/v1/no-such-route", None, id="unknown-route"),
        pytest.param("DELETE", "/v1/health/live", None, id="wrong-method"),
    ],
)
def test_errors_are_structured_and_reveal_no_internals(
    target: ProbeTarget, evidence: EvidenceLog, method: str, path: str, body: bytes | None
) -> None:
    """A stack trace in a response hands attackers file paths, versions and code structure."""
    admin = target.http.as_admin(target.admin_key)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    response = polite(lambda: admin.request(method, path, body=body, headers=headers))
    evidence.request(response)
    url = f"{target.edge_url}{path}"
    assert 400 <= response.status < 500, f"{method} {url} must answer 4xx (got {response.status})"
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"{method} {url} must answer a JSON error (got {response.headers.get('content-type')})"
    )
    assert response.error_code, (
        f"{method} {url} must carry error.code (got {response.body[:200]!r})"
    )
    leaks = _leaks(response)
    assert not leaks, f"{method} {url} must not reveal internals (found {leaks})"


def _same_place(reported: dict[str, object], url: str, in_network: str | None) -> bool:
    """The worker's reported host and port are the store's: as this machine reaches it, or as
    the target says the workers reach it on their own network."""
    parts = urlsplit(url)
    seen = f"{reported['host']}:{reported['port']}"
    return seen in {f"{parts.hostname}:{parts.port}", in_network}


@pytest.mark.checklist("APP-DB-URL")
def test_workers_use_the_deployments_database_and_it_answers(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A worker pointed at the wrong database serves stale or test data as if it were real."""
    dsn = target.info.stores.postgres_dsn
    database = urlsplit(dsn).path.lstrip("/") if dsn else None
    for worker, report in target.metrics.runtime(evidence).items():
        db = report["dependencies"]["database"]
        where = f"{db['host']}:{db['port']}/{db['path']}"
        assert db["up"], f"the database of worker {worker} ({where}) must answer (it does not)"
        if dsn:
            expected = f"{urlsplit(dsn).hostname}:{urlsplit(dsn).port}/{database}"
            in_network = target.info.stores.network_addresses.get("postgres")
            same = db["path"] == database and _same_place(db, dsn, in_network)
            assert same, (
                f"worker {worker} must use the target's database {expected}"
                + (f" (on its network {in_network}/{database})" if in_network else "")
                + f" (got {where})"
            )
    if not dsn:
        evidence.note("the target gives no DSN: the database's address was not compared")


@pytest.mark.checklist("APP-EXT-URLS")
def test_every_dependency_of_every_worker_answers(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A dependency a worker cannot reach fails requests that need it, often only some of them."""
    redis_url = target.info.stores.redis_url
    for worker, report in target.metrics.runtime(evidence).items():
        for name, dependency in report["dependencies"].items():
            assert dependency["up"], f"{name} must answer worker {worker} (it does not)"
        if redis_url:
            redis = report["dependencies"]["redis"]
            in_network = target.info.stores.network_addresses.get("redis")
            assert _same_place(redis, redis_url, in_network), (
                f"worker {worker} must use the target's Redis {urlsplit(redis_url).hostname}:"
                f"{urlsplit(redis_url).port} (got {redis['host']}:{redis['port']})"
            )


def _ready_status(target: ProbeTarget) -> int:
    return polite(lambda: target.http.get("/v1/health/ready")).status


@pytest.mark.checklist("APP-HEALTH")
def test_readiness_follows_a_dependency_down_and_back(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Readiness that stays green with a dependency down keeps traffic on a broken worker."""
    live = polite(lambda: target.http.get("/v1/health/live"))
    ready = polite(lambda: target.http.get("/v1/health/ready"))
    evidence.request(live)
    evidence.request(ready)
    assert live.status == 200, (
        f"GET {target.edge_url}/v1/health/live must answer 200 (got {live.status})"
    )
    assert ready.status == 200, (
        f"GET {target.edge_url}/v1/health/ready must answer 200 (got {ready.status})"
    )
    redis = target.control("redis")  # skips where the target gives no control over Redis
    redis.stop()
    try:
        down = poll(lambda: _ready_status(target), 10.0, interval=0.25, accept=lambda s: s == 503)
        evidence.figure("readiness turned 503 after Redis stopped", round(down.seconds, 2), "s")
        assert down.value == 503, (
            f"/v1/health/ready must answer 503 within 10 s of Redis stopping (got {down.value})"
        )
    finally:
        redis.start()
    back = poll(lambda: _ready_status(target), 30.0, interval=0.25, accept=lambda s: s == 200)
    evidence.figure("readiness back to 200 after Redis started", round(back.seconds, 2), "s")
    assert back.value == 200, (
        f"/v1/health/ready must answer 200 again once Redis is back (got {back.value})"
    )
