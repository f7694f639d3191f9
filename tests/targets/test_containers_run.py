"""`preflight run --target containers` end to end: the repository's checklist decided against
the deployment system/deploy ships, started on this machine's engine (set-up starts one), and
nothing of it left afterwards. (The load profiles are measured by bench/ and the load tests.)

Once the deployment is up, before the checklist runs, the target's own contract is checked
against it (what no checklist item looks at: the names the drills know the containers by, the
client network, the callback address, a restarted container's log, the published addresses);
the run then decides the checklist against the same deployment."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import preflight.run
from preflight.checklist import load_checklist
from preflight.cli import main
from preflight.load.cpu_bound import throttling
from preflight.load.locust import LocustRunner
from preflight.outcomes import Outcome
from preflight.probe.target import ProbeTarget
from preflight.targets import TargetOptions, select_target
from preflight.targets.alerting import DrillRouting
from preflight.targets.base import TargetDescription, TargetInfo
from preflight.targets.containers import ContainersTarget
from preflight.targets.containers.engine import LAUNCHER_LABEL, engine, launcher
from preflight.targets.select import Selection
from tests.checks.support import outcomes, probe

REPO = Path(__file__).resolve().parents[2]
ERROR_ITEM, ERROR_PROBE = "MON-ERROR-TRACKING", "monitoring/test_error_tracking.py"
ALERT_ITEM, ALERT_PROBE = "POST-ALERT-DRILL", "drills/test_alert_drill.py"

pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")  # tests/conftest.py

# What this machine cannot decide, whatever the deployment: pip-audit's vulnerability service
# does not answer here (DEP-SECURITY-SCAN errors, saying so).
UNDECIDABLE = {
    "DEP-SECURITY-SCAN": "could not audit",
    # The rolling-restart drill's senders share the 2 cores with the deployment: under 100
    # acknowledged messages/s it loses nothing and says it did not reach the item's rate.
    "DEP-ZERO-DOWNTIME": "does not decide it at its rate",
    # A deployment started for the run has no week of production history to judge.
    **dict.fromkeys(
        ("POST-PERF-REVIEW", "POST-REAL-USAGE", "MON-UPTIME-SLO"),
        "no production history over the window",
    ),
    # Records due after the launch: its post-mortem, and the DR plan reviewed against it.
    "POST-POSTMORTEM": "post-mortem is due within its first month",
    "POST-DR-UPDATE": "due within the launch's first month",
}
# Operations records only people can complete: nobody on the example on-call rota has
# acknowledged a test page. Probe items that need their owner's attestation too stay unverified
# after their probes pass (nobody attests here).
RECORD_GAPS = {"OPS-ONCALL-SHIFTS": "acknowledged no test page"}
# Skips the shipped deployment has, each for a stated reason that is not a gap of its own.
EXPECTED_SKIPS = {
    "MON-GRAFANA": "runs no Grafana",  # Debian packages none and no registry answers here
    "RB-REDEPLOY-PLAN": "one run cannot observe the next one",
    # The edge is reached as localhost: no public DNS record to judge.
    "INF-NET-DNS": "resolves to this machine's loopback only",
    # The edge's certificate comes from the ACME CA the run started, a root no client trusts.
    "INF-NET-CERT": "verifies only to the root of the ACME CA this run started",
}


def test_the_checklist_decides_the_shipped_deployment_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    checked: list[str] = []
    monkeypatch.setattr(preflight.run, "select_target", _checking(checked))
    out = tmp_path / "reports"
    code = main(["run", "--target", "containers", "--no-load", "--out", str(out)])
    printed = capsys.readouterr()
    assert "target: containers" in printed.err, "the run's first lines say which target"
    assert checked == ["contract", "error tracking red", "alert drill red"], printed.err[-2000:]
    record = json.loads((out / "latest" / "record.json").read_text())
    checklist = load_checklist(REPO / "checklist.yaml")
    assert [i["id"] for i in record["items"]] == [i.id for i in checklist.items]
    assert code == (0 if record["verdict"]["ready"] else 1)
    assert printed.out.strip().splitlines()[-1] == record["verdict"]["summary"]

    probed = {i["id"]: i for i in record["items"] if i["tests"]}
    assert set(probed) == {i.id for i in checklist.items if i.verify == "probe"}
    # Every probe item passes, or fails under a waiver in waivers.yaml, or is one of the named
    # exceptions above: no gap of the shipped deployment is skipped over.
    attested_too = {i.id for i in checklist.items if i.attest}
    unexpected = {
        item_id: (item["outcome"], item["reason"])
        for item_id, item in probed.items()
        if item["outcome"] not in ("pass", "waived")
        and UNDECIDABLE.get(item_id, "\0") not in item["reason"]
        and not (item["outcome"] == "skip" and EXPECTED_SKIPS.get(item_id, "\0") in item["reason"])
        and not (item["outcome"] == "fail" and RECORD_GAPS.get(item_id, "\0") in item["reason"])
        and not (
            item_id in attested_too
            and item["outcome"] == "unverified"
            and "needs its owner's attestation too" in item["reason"]
        )
    }
    assert not unexpected, unexpected

    # The run's deployments (the restore drill starts a second one) are gone.
    client = engine()
    try:
        ours = {"label": f"{LAUNCHER_LABEL}={launcher()}"}
        leftovers = [
            *client.containers.list(all=True, filters=ours),
            *client.networks.list(filters=ours),
            *client.volumes.list(filters=ours),
        ]
    finally:
        client.close()
    assert not leftovers, leftovers


# -- the target's contract, checked on the run's own deployment --------------------------------


class _Checked:
    """The run's containers target, whose deployment is checked once it is up."""

    def __init__(self, target: ContainersTarget, checked: list[str]) -> None:
        self.target = target
        self.checked = checked

    def __enter__(self) -> TargetInfo:
        info = self.target.__enter__()
        try:
            _the_target_contract(info, self.target)
        except BaseException:
            self.target.__exit__()
            raise
        self.checked.append("contract")
        return info

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None and self.target.info is not None:
                _without_its_tracker_error_tracking_fails(self.target.info, self.target)
                self.checked.append("error tracking red")
                _an_api_service_down_on_up_zero_alone_misses_a_stopped_container(self.target.info)
                self.checked.append("alert drill red")
        finally:
            self.target.__exit__(*exc)

    def describe(self) -> TargetDescription:
        return self.target.describe()


def _checking(checked: list[str]) -> Callable[..., tuple[Selection, Any]]:
    def select(spec: str, options: TargetOptions | None = None) -> tuple[Selection, Any]:
        selection, target = select_target(spec, options)
        assert isinstance(target, ContainersTarget), selection
        return selection, _Checked(target, checked)

    return select


def _the_target_contract(info: TargetInfo, target: ContainersTarget) -> None:
    """The edge over TLS for the name its certificate is for; the containers by the names the
    drills know them; an API container killed with SIGKILL brought back by the engine's restart
    policy (and counted, and its output still followed); a Redis stopped on purpose staying
    down until started (readiness says so meanwhile); PostgreSQL 17 over TLS; clients of many
    addresses; the callback address; only 127.0.0.1 published."""
    assert info.edge.ca_file is not None
    assert info.edge.url.startswith("https://localhost:")  # the name its certificate is for
    ctx = ssl.create_default_context(cafile=str(info.edge.ca_file))
    with urllib.request.urlopen(f"{info.edge.url}/v1/health/ready", context=ctx) as resp:  # noqa: S310
        assert resp.status == 200
        assert resp.headers["Strict-Transport-Security"]

    drills = info.drills
    assert drills.processes is not None
    assert drills.restarts is not None
    assert {
        "api-1",
        "api-2",
        "realtime",
        "postgres",
        "postgres-standby",
        "redis",
        "nginx",
        "backup",
    } <= set(drills.control)
    # Each API container reports its own worker id, the name the drills know it by.
    ids = {
        name: _runtime(url, info.admin_key)["worker_id"] for name, url in drills.worker_urls.items()
    }
    assert ids == {"api-1": "api-1", "api-2": "api-2", "realtime": "realtime-1"}, ids
    assert drills.partitions is not None
    assert set(drills.partitions.stores) == {"postgres", "redis"}
    pid, before = drills.processes()["api-1"], drills.restarts()["api-1"]
    drills.control["api-1"].kill()  # SIGKILL from this host, as the OOM killer would
    assert _until(
        lambda: (
            drills.restarts()["api-1"] > before
            and drills.processes().get("api-1") not in (None, pid)
        ),
        60,
    ), "the restart policy brings a killed API container back"
    # A deliberate stop stays down until started: readiness says so meanwhile.
    assert drills.control["redis"].stop() is not None
    assert _until(lambda: not _ready(info.edge.url, ctx), 30)
    drills.control["redis"].start()
    assert _until(lambda: _ready(info.edge.url, ctx), 60)

    target_probe = ProbeTarget(info)
    version = int(target_probe.pg.show("server_version_num")["server_version_num"])
    assert version >= 170000, f"the shipped PostgreSQL is 17, got {version}"
    assert target_probe.pg.show("ssl")["ssl"] == "on", "the shipped PostgreSQL speaks TLS"
    _many_clients_reach_the_edge_as_themselves(info)
    _the_api_containers_reach_the_callback_host(info, target)
    _the_error_tracker_listens_on_the_callback_host_alone(info, target)
    _the_scaling_steps_cpu_limits_apply_and_come_off(info, target)
    _load_users_reach_the_edge_each_from_an_address_of_its_own(info)
    _a_restarted_containers_output_is_still_followed(info, "api-1")
    assert info.edge.config is not None
    assert "limit_req" in info.edge.config(), "nginx -T of the running edge"
    assert info.drills.listeners is not None
    listening = info.drills.listeners()
    assert listening, "the engine publishes the edge at least"
    assert {address for _name, address, _port in listening} == {"127.0.0.1"}


def _many_clients_reach_the_edge_as_themselves(info: TargetInfo) -> None:
    """Two clients of this machine, each from an address of the client network, reach the edge
    (TLS verified for its own name) and its access log names each address."""
    clients = info.edge.clients
    assert clients is not None, "as root, the target routes a client network"
    target_probe = ProbeTarget(info)
    sources = [target_probe.client_address() for _ in range(2)]
    for source in sources:
        assert source is not None
        context = target_probe.ssl_context()
        with (
            socket.create_connection(
                clients.address, timeout=10, source_address=(source, 0)
            ) as raw,
            context.wrap_socket(raw, server_hostname=target_probe.edge_address[0]) as tls,
        ):
            tls.sendall(
                b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            assert tls.recv(64).startswith(b"HTTP/1.1 200"), source
    access = next(f for f in info.observability.log_files if f.name == "access.log")
    assert _until(lambda: all(f'"remote_addr":"{s}"' in access.read_text() for s in sources), 10)


def _the_api_containers_reach_the_callback_host(info: TargetInfo, target: ContainersTarget) -> None:
    """Where probes listen for what the system sends out (webhooks): an API container connects."""
    host = info.drills.callback_host
    assert host is not None
    with socket.create_server((host, 0)) as server:
        port = server.getsockname()[1]
        api = target._running["api-1"].container.get_wrapped_container()
        connect = f"import socket; socket.create_connection(({host!r}, {port}), 5)"
        done = subprocess.run(
            ["docker", "exec", str(api.id), "python", "-c", connect],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def _the_error_tracker_listens_on_the_callback_host_alone(
    info: TargetInfo, target: ContainersTarget
) -> None:
    """The API containers report to the run's stand-in for Sentry, which listens on the
    callback host alone (MON-ERROR-TRACKING passes on it in the run)."""
    tracker = target._error_tracker
    assert tracker is not None
    assert info.observability.error_events == tracker.events
    address = urlsplit(tracker.url)
    assert address.hostname == info.drills.callback_host
    with pytest.raises(ConnectionRefusedError):  # not on every address: on that one alone
        socket.create_connection(("127.0.0.1", address.port or 0), timeout=5).close()


def _without_its_tracker_error_tracking_fails(info: TargetInfo, target: ContainersTarget) -> None:
    """After the checklist: with the stand-in gone (the API's DSN pointing nowhere) the same
    probe fails, naming the event that never arrived."""
    tracker = target._error_tracker
    assert tracker is not None
    tracker.child.stop()
    outcome, reason = outcomes(probe(info, ERROR_PROBE, items={ERROR_ITEM}))[ERROR_ITEM]
    assert outcome is Outcome.FAIL, reason
    assert "the error tracker must receive an event tagged request_id=" in reason


REPLICAS = ("api-1", "api-2", "realtime-1")


def _load_users_reach_the_edge_each_from_an_address_of_its_own(info: TargetInfo) -> None:
    """Locust's users go through the client network, not the published port (which shows
    every user as this machine's one address, so the edge's per-address limit would refuse
    them): the edge's access log names an address of that network per user."""
    clients = info.edge.clients
    assert clients is not None
    access = next(f for f in info.observability.log_files if f.name == "access.log")
    already = len(access.read_text().splitlines())
    users = {"users": 6, "spawn_rate": 6, "hold_s": 6, "room_size": 3, "sockets_per_user": 1}
    data = LocustRunner(overrides=users).collect(info, "smoke", 1)
    assert data.source_net == clients.sources, data.source_net
    network = ipaddress.ip_network(clients.sources)
    seen = Counter(
        json.loads(line)["remote_addr"] for line in access.read_text().splitlines()[already:]
    )
    ours = {address for address in seen if ipaddress.ip_address(address) in network}
    assert len(ours) >= 4, seen  # six users, each from an address picked at random


def _the_scaling_steps_cpu_limits_apply_and_come_off(
    info: TargetInfo, target: ContainersTarget
) -> None:
    """The load run's scaling step limits every container the edge sends /v1 to, live; a busy
    one is throttled (its cgroup's counters say so), and the compose file's limits come back."""
    limits = info.drills.cpu_limits
    assert limits is not None
    assert limits.workers == ("api-1", "api-2", "realtime")
    containers = [target._running[n].container.get_wrapped_container() for n in REPLICAS]

    def nano_cpus() -> list[int]:
        for container in containers:
            container.reload()
        return [int(c.attrs["HostConfig"]["NanoCpus"]) for c in containers]

    assert nano_cpus() == [2_000_000_000, 2_000_000_000, 1_000_000_000]  # the compose file's
    limits.limit(0.05)
    try:
        assert nano_cpus() == [50_000_000] * 3
        before = limits.cpu_stat()
        assert set(before) == set(limits.workers)
        burn = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass"
        done = subprocess.run(
            ["docker", "exec", str(containers[0].id), "python", "-c", burn],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        seen = throttling(before, limits.cpu_stat())
        assert seen["api-1"]["throttled"] > 0, seen
        assert seen["api-1"]["throttled_usec"] > 0, seen
    finally:
        limits.restore()
    assert nano_cpus() == [2_000_000_000, 2_000_000_000, 1_000_000_000]


def _an_api_service_down_on_up_zero_alone_misses_a_stopped_container(info: TargetInfo) -> None:
    """After the checklist (in which the alert drill passed with system/monitoring as shipped):
    the same drill with APIServiceDown as `up == 0` alone turns red, since a stopped container
    leaves the compose file's DNS discovery instead of going down."""
    routing = info.drills.alert_routing
    assert isinstance(routing, DrillRouting), "the containers target offers alert_routing"
    assert routing.listen_host != "127.0.0.1", "Alertmanager's container reaches no loopback"
    with tempfile.TemporaryDirectory() as tmp:
        source = _up_only(Path(tmp))
        drills = dataclasses.replace(
            info.drills, alert_routing=dataclasses.replace(routing, source=source)
        )
        results = probe(dataclasses.replace(info, drills=drills), ALERT_PROBE, items=[ALERT_ITEM])
    red = {r.nodeid.rsplit("::", 1)[1]: r for r in results.results}
    burst = red["test_an_error_burst_pages_through_high_error_rate"]
    down = red["test_a_stopped_worker_pages_through_api_service_down"]
    assert burst.outcome is Outcome.PASS, burst.message
    assert down.outcome is Outcome.FAIL, down.message
    assert "no receiver got it; the alert was never firing" in down.message


def _up_only(tmp: Path) -> Path:
    """system/monitoring with APIServiceDown as `up == 0` alone."""
    copy = tmp / "monitoring"
    shutil.copytree(REPO / "system" / "monitoring", copy)
    path = copy / "alerts.yml"
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    down = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "APIServiceDown"]
    assert len(down) == 1, "alerts.yml has one APIServiceDown"
    down[0]["expr"] = 'up{job="chatsdk-api"} == 0'
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return copy


def _a_restarted_containers_output_is_still_followed(info: TargetInfo, worker: str) -> None:
    """After the restart above, the worker's log file still receives its output."""
    url = info.drills.worker_urls[worker]
    assert _until(lambda: _ready(url, None), 120), f"{worker} is ready again after its restart"
    request_id = f"e2e-{time.monotonic_ns()}"
    request = urllib.request.Request(  # noqa: S310 - the worker's own URL
        f"{url}/v1/health/live", headers={"X-Request-ID": request_id}
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the worker's own URL
        pass
    log = next(f for f in info.observability.log_files if f.name == f"{worker}.log")
    assert _until(lambda: request_id in log.read_text(), 15), f"{request_id} in {log}"


def _runtime(url: str, admin_key: str) -> dict[str, object]:
    request = urllib.request.Request(f"{url}/v1/admin/runtime", headers={"X-Admin-Key": admin_key})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        report: dict[str, object] = json.load(response)
    return report


def _ready(edge_url: str, ctx: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(f"{edge_url}/v1/health/ready", context=ctx, timeout=5) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:  # urllib's HTTPError (503) and URLError are OSErrors
        return False


def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(1)
    return False
