"""The deployment artefacts in system/deploy (Dockerfile, docker-compose.yml, k8s/) decide how the
release runs in production: limits, rollout, supervision, image pinning, scans and secrets. Each
is read through its real validator first (hadolint, `docker-compose config`,
kubernetes-validate --strict; see _artefacts.py)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import subprocess
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from checks.deployment._artefacts import (
    TOOL_TIMEOUT_S,
    Repo,
    api_deployments,
    compose,
    dockerfile_instructions,
    hadolint,
    image_pin_problem,
    images,
    manifests,
    tool,
    valid,
    workloads,
)
from checks.drills._drills import status_of
from preflight.evidence import EvidenceLog
from preflight.polling import poll, until
from preflight.probe.target import ProbeTarget

RESTARTING = frozenset({"always", "unless-stopped", "on-failure"})
READY_PATH, LIVE_PATH = "/v1/health/ready", "/v1/health/live"
ROOT_USERS = frozenset({"root", "0", "0:0", "root:root"})
# How long a supervisor may take to bring a killed API worker back to serving (its backoff, its
# start and its databases' connections, on a busy machine).
RESTART_WITHIN_S = 30.0
# Setting names whose values are secrets: they may only point at a file (…_FILE) or a secret store.
SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|ADMIN_KEY|API_KEY)(_KEY)?$", re.I
)
# Test fixtures hold deliberately fake credentials (attack wordlists, sample DSNs, throwaway
# keys); they are allowlisted as trees. Every other finding must be audited in the allowlist.
FIXTURE_TREES = ("tests/", "checks/")
ALLOWLIST = Path(__file__).with_name("secrets-allowlist.yaml")
NAME_LIKE = re.compile(r"[A-Za-z][A-Za-z._-]*")
# Public keys and signatures are published on purpose: the key registry and the signed
# statements (waivers, attestations) hold them in these fields, and only there are they exempt.
SIGNED_FILES = ("signoff/keys.yaml", "waivers.yaml", "signoff/attestations/*.yaml")
PUBLIC_FIELD = re.compile(r"^\s*(?:-\s+)?(?:public_key|signature):\s")


# -- PERF-RESOURCE-LIMITS ----------------------------------------------------------------------


def sets_cpu_and_memory(
    resources: dict[str, Any], parts: tuple[str, ...], cpu: str, what: str
) -> None:
    """Assert every one of `parts` of `resources` sets `cpu` and memory; `what` says who must set
    which field (`... must set resources`), the part and what it holds follow."""
    __tracebackhide__ = True
    for part in parts:
        got = resources.get(part, {})
        assert {cpu, "memory"} <= set(got), f"{what}.{part} {cpu} and memory (got {got or 'none'})"


@pytest.mark.checklist("PERF-RESOURCE-LIMITS")
def test_every_compose_service_has_limits_and_reservations(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """One runaway process can starve everything else on the host."""
    for name, service in compose(repo.compose).services.items():
        resources = service.get("deploy", {}).get("resources", {})
        evidence.note(f"{name}: {resources}")
        what = f"compose service {name} must set deploy.resources"
        sets_cpu_and_memory(resources, ("limits", "reservations"), "cpus", what)


@pytest.mark.checklist("PERF-RESOURCE-LIMITS")
def test_every_kubernetes_container_has_requests_and_limits(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """One runaway pod can starve everything else on the node."""
    for workload in valid(workloads(repo.k8s), "a workload"):
        for container in workload.containers():
            resources = container.get("resources", {})
            evidence.note(f"{workload.ref} container {container.get('name')}: {resources}")
            what = f"{workload.ref} container {container.get('name')} must set resources"
            sets_cpu_and_memory(resources, ("requests", "limits"), "cpu", what)


# -- DEP-STRATEGY-ROLLING ----------------------------------------------------------------------


@pytest.mark.checklist("DEP-STRATEGY-ROLLING")
def test_api_deployments_roll_without_losing_capacity(repo: Repo, evidence: EvidenceLog) -> None:
    """An undeclared strategy, or one counting unready pods, makes every deploy an outage risk."""
    for deployment in valid(api_deployments(repo.k8s), "the API Deployment"):
        strategy = deployment.doc["spec"].get("strategy", {})
        evidence.note(f"{deployment.ref}: strategy {strategy}")
        assert strategy.get("type") == "RollingUpdate", (
            f"{deployment.ref} must declare strategy RollingUpdate "
            f"(got {strategy.get('type', 'none')})"
        )
        unavailable = str(strategy.get("rollingUpdate", {}).get("maxUnavailable", "25%"))
        assert unavailable in ("0", "0%"), (
            f"{deployment.ref} must roll with maxUnavailable 0 (got {unavailable})"
        )
        for container in deployment.doc["spec"]["template"]["spec"]["containers"]:
            path = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
            assert path == READY_PATH, (
                f"{deployment.ref} container {container['name']} must gate the rollout on a "
                f"readiness probe of {READY_PATH} (got {path or 'no readiness probe'})"
            )


@pytest.mark.checklist("DEP-STRATEGY-ROLLING")
def test_every_compose_service_reports_its_health(repo: Repo, evidence: EvidenceLog) -> None:
    """`docker compose up --wait` and depends_on can only wait for services that report health."""
    for name, service in compose(repo.compose).services.items():
        check = service.get("healthcheck", {})
        evidence.note(f"{name}: healthcheck {check.get('test')}")
        reports = bool(check.get("test")) and not check.get("disable")
        assert reports, f"compose service {name} must define a healthcheck (got {check or 'none'})"


@pytest.mark.checklist("DEP-STRATEGY-ROLLING")
def test_the_image_reports_its_health(repo: Repo, evidence: EvidenceLog) -> None:
    """Without a HEALTHCHECK, a container started from the image alone is never known ready."""
    checks = [
        rest for word, rest in dockerfile_instructions(repo.dockerfile) if word == "HEALTHCHECK"
    ]
    evidence.note(f"HEALTHCHECK {checks}")
    declared = bool(checks) and "NONE" not in checks[-1].upper().split()
    assert declared, (
        f"{repo.relative(repo.dockerfile)} must declare a HEALTHCHECK "
        f"(got {checks[-1] if checks else 'none'})"
    )


# -- APP-SUPERVISED ----------------------------------------------------------------------------


@pytest.mark.checklist("APP-SUPERVISED")
def test_every_compose_service_is_restarted(repo: Repo, evidence: EvidenceLog) -> None:
    """A container without a restart policy stays down after its first crash."""
    for name, service in compose(repo.compose).services.items():
        policy = service.get("restart") or service.get("deploy", {}).get("restart_policy", {}).get(
            "condition"
        )
        evidence.note(f"{name}: restart {policy}")
        assert policy in RESTARTING | {"any"}, (
            f"compose service {name} must restart on failure (restart: unless-stopped; "
            f"got {policy or 'none'})"
        )


DAY_S = 86400.0


@pytest.mark.checklist("BAK-DB-DAILY")
def test_the_compose_deployment_schedules_daily_backups(repo: Repo, evidence: EvidenceLog) -> None:
    """A deployment that ships no backup job has no backup to be fresh."""
    jobs = []
    for name, service in compose(repo.compose).services.items():
        command = " ".join(service.get("command") or _image_command(repo, service))
        if "chatsdk.backup" in command and "schedule" in command:
            env = service.get("environment") or {}
            every = float(env.get("CHATSDK_BACKUP_EVERY", "43200"))  # the job's default: 12 h
            kept = any(
                str(v).split(":")[1:2] == [env.get("CHATSDK_BACKUP_DIR")]
                for v in service.get("volumes") or []
            )
            evidence.note(f"{name}: `{command}` every {every:g} s, repository on a volume: {kept}")
            jobs.append((name, every, kept, service.get("restart")))
    assert jobs, (
        f"{repo.relative(repo.compose)} must run a scheduled backup service "
        "(python -m chatsdk.backup schedule; got none)"
    )
    for name, every, kept, restart in jobs:
        assert every <= DAY_S, (
            f"compose service {name} must back up at least daily (every {every:g} s)"
        )
        assert kept, f"compose service {name} must keep CHATSDK_BACKUP_DIR on a volume"
        assert restart in RESTARTING, f"compose service {name} must restart (got {restart})"


def _image_command(repo: Repo, service: dict[str, Any]) -> list[str]:
    """The CMD of the Dockerfile a compose service builds its image from."""
    build = service.get("build") or {}
    dockerfile = Path(str(build.get("context", repo.root))) / str(build.get("dockerfile", ""))
    if not dockerfile.is_file():
        return []
    cmds = [rest for word, rest in dockerfile_instructions(dockerfile) if word == "CMD"]
    try:
        return [str(w) for w in json.loads(cmds[-1])] if cmds else []
    except ValueError:
        return cmds[-1].split()


@pytest.mark.checklist("APP-SUPERVISED")
def test_every_kubernetes_container_has_a_liveness_probe(repo: Repo, evidence: EvidenceLog) -> None:
    """A hung process that still runs is only restarted when a liveness probe notices it."""
    for workload in valid(workloads(repo.k8s), "a workload"):
        policy = workload.pod_spec.get("restartPolicy", "Always")
        assert policy == "Always", f"{workload.ref} must restart its pods (restartPolicy {policy})"
        for container in workload.pod_spec.get("containers", []):
            probe = container.get("livenessProbe")
            evidence.note(f"{workload.ref} container {container.get('name')}: liveness {probe}")
            assert probe, (
                f"{workload.ref} container {container.get('name')} must have a livenessProbe (none)"
            )
            if workload in api_deployments(repo.k8s):
                path = probe.get("httpGet", {}).get("path")
                assert path == LIVE_PATH, (
                    f"{workload.ref} container {container.get('name')} liveness must probe "
                    f"{LIVE_PATH} (got {path})"
                )


@pytest.mark.checklist("APP-SUPERVISED")
def test_a_killed_api_worker_comes_back(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """An unsupervised worker stays down after its first crash and the edge runs short."""
    # The worker is killed from outside, as the kernel's OOM killer or an operator's `kill -9`
    # would: by its pid where the target names its processes (never through a drill's control,
    # which could tell the target the kill was meant), else by the target file's kill command.
    # Back means serving again through the edge with a new pid, and ready on its own address
    # where the target gives it; where the target says how often its supervisor restarted each
    # worker, the restart must be counted there too.
    drills = target.info.drills
    pids = dict(drills.processes()) if drills.processes else {}
    names = sorted(n for n in pids if n.startswith("api")) or sorted(
        n for n in drills.control if n.startswith("api")
    )
    if not names:
        pytest.skip(
            f"target {target.name} names no API worker's process and gives no control over one; "
            "add control.api-0 (stop, start, kill) to the target file to decide whether a killed "
            "worker comes back"
        )
    name = names[0]
    worker_id = name.removeprefix("api-")
    counted = drills.restarts().get(name, 0) if drills.restarts else None
    url = target.worker_url(name)
    # The worker's process as it reports itself (pid and start time: a container's process
    # may be pid 1 before and after its restart), from its own address where the target gives
    # one, else through the edge by its worker id.
    old = _process_of(target, evidence, worker_id, url)
    if name in pids:
        os.kill(pids[name], signal.SIGKILL)
        evidence.note(f"kill -9 {pids[name]} ({name}) from outside the target's control")
    else:
        target.control(name).kill()
        evidence.note(f"killed {name} ({old}) with its kill command")

    def restarted() -> int | None:
        now = _process_of(target, evidence, worker_id, url)
        if now is None or now == old:
            return None
        return now[0] if url is None or status_of(f"{url}{READY_PATH}") == 200 else None

    try:
        came_back = poll(restarted, RESTART_WITHIN_S, interval=1.0).value
        now_counted = drills.restarts().get(name, 0) if drills.restarts else None
    finally:
        if name in drills.control:
            target.control(name).start()  # leave the target as found, supervised or not
            _wait_for_worker(target, evidence, worker_id, url)
    evidence.figure("restart deadline", RESTART_WITHIN_S, "s")
    assert came_back is not None, (
        f"API worker {name} of target {target.name} must be restarted by a supervisor within "
        f"{RESTART_WITHIN_S:g} s of a SIGKILL (nothing restarted it)"
    )
    evidence.note(f"{name} serving again with pid {came_back}")
    if counted is None or now_counted is None:
        evidence.note(f"target {target.name} does not say how often its supervisor restarted it")
        return
    evidence.figure(f"{name} restarts counted by the supervisor", now_counted - counted)
    assert now_counted > counted, (
        f"the supervisor of target {target.name} must count the restart of {name} "
        f"(restarts before the kill {counted}, after {now_counted})"
    )


def _wait_for_worker(
    target: ProbeTarget, evidence: EvidenceLog, worker_id: str, url: str | None
) -> None:
    if not until(
        lambda: _process_of(target, evidence, worker_id, url) is not None, 30.0, interval=0.5
    ):
        raise RuntimeError(f"API worker {worker_id} did not come back after control.start()")


def _process_of(
    target: ProbeTarget, evidence: EvidenceLog, worker_id: str, url: str | None
) -> tuple[int, float] | None:
    """(pid, start time) of a worker, from its runtime report."""
    if url is not None:
        request = urllib.request.Request(  # noqa: S310 - the target's own worker URL
            f"{url}/v1/admin/runtime", headers={"X-Admin-Key": target.info.admin_key}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                report = json.load(response)
        except (OSError, ValueError):
            return None
    else:
        report = target.metrics.runtime(evidence).get(worker_id)
    if not report or "pid" not in report:
        return None
    return int(report["pid"]), float(report.get("started_at", 0.0))


# -- APP-IMAGES-PUBLISHED ----------------------------------------------------------------------


@pytest.mark.checklist("APP-IMAGES-PUBLISHED")
def test_every_image_is_pinned(repo: Repo, evidence: EvidenceLog) -> None:
    """Floating tags deploy whatever the registry holds today: not reproducible, no rollback."""
    found = list(images(repo))
    for where, image in found:
        evidence.note(f"{where}: {image}")
    evidence.note(
        "Decided from the artefacts: that the running image was pulled from the registry is only "
        "observable on the cluster (kubectl get pods -o jsonpath='{..imageID}')."
    )
    assert found, "the deployment artefacts must name the images they run (found none)"
    loose = [
        (where, image, problem) for where, image in found if (problem := image_pin_problem(image))
    ]
    assert not loose, (
        f"image {loose[0][1]} ({loose[0][0]}) must be pinned by digest or exact version "
        f"({loose[0][2]})"
    )


# -- DEP-SECURITY-SCAN -------------------------------------------------------------------------


@pytest.mark.checklist("DEP-SECURITY-SCAN")
def test_the_image_definition_passes_hadolint_and_drops_root(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """An image that runs as root or breaks hadolint's rules turns any app bug into a host risk."""
    findings = [f for f in hadolint(repo.dockerfile) if f.get("level") in ("error", "warning")]
    evidence.attach("hadolint.json", json.dumps(findings, indent=2), "application/json")
    assert not findings, (
        f"{repo.relative(repo.dockerfile)} must be hadolint-clean "
        f"(got {findings[0]['code']} at line {findings[0]['line']}: {findings[0]['message']})"
    )
    users = [rest for word, rest in dockerfile_instructions(repo.dockerfile) if word == "USER"]
    last_from = max(
        i for i, (w, _r) in enumerate(dockerfile_instructions(repo.dockerfile)) if w == "FROM"
    )
    final_users = [
        rest
        for i, (w, rest) in enumerate(dockerfile_instructions(repo.dockerfile))
        if w == "USER" and i > last_from
    ]
    evidence.note(f"USER instructions {users}")
    non_root = bool(final_users) and final_users[-1].strip() not in ROOT_USERS
    assert non_root, (
        f"{repo.relative(repo.dockerfile)} must run its final stage as a non-root USER "
        f"(got {final_users[-1] if final_users else 'no USER, so root'})"
    )


@pytest.mark.checklist("DEP-SECURITY-SCAN")
def test_the_release_dependencies_have_no_known_vulnerability(evidence: EvidenceLog) -> None:
    """Known vulnerable dependencies are the easiest attack path."""
    pinned = _release_dependencies()
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
        requirements.write(
            "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))
        )
        requirements.flush()
        result = subprocess.run(
            [
                tool("pip-audit"),
                "--disable-pip",
                "--no-deps",
                "--format",
                "json",
                "--progress-spinner",
                "off",
                "-r",
                requirements.name,
            ],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S * 3,
            check=False,
        )
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"pip-audit gave no report: {result.stderr.strip()[-300:]}") from None
    evidence.attach("pip-audit.json", json.dumps(report, indent=2), "application/json")
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    vulnerable = [d for d in deps if d.get("vulns")]
    evidence.figure("dependencies audited", len(deps) - len(skipped))
    assert not vulnerable, (
        f"release dependency {vulnerable[0]['name']} {vulnerable[0]['version']} must have no known "
        f"vulnerability (got {', '.join(v['id'] for v in vulnerable[0]['vulns'])})"
    )
    if skipped:
        raise RuntimeError(
            f"pip-audit could not audit {len(skipped)} of {len(deps)} release dependencies "
            f"(e.g. {skipped[0]['name']}: {skipped[0]['skip_reason']}); its vulnerability service "
            "is unreachable from here"
        )


def _release_dependencies() -> dict[str, str]:
    """Name -> installed version of everything `pip install "preflight[all]"` installs: the
    engine, the probes, the load generator, the browser driver and the chat system (not the
    dev extra, which no release carries)."""
    found: dict[str, str] = {}
    todo = ["preflight"]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower()
        if key in found:
            continue
        found[key] = dist.version
        extras = [""]
        if key == "preflight":
            extras += [e for e in dist.metadata.get_all("Provides-Extra") or [] if e != "dev"]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(req.name)
    found.pop("preflight", None)  # the project itself is not on PyPI
    return found


# -- SEC-SECRETS-NOT-IN-CODE -------------------------------------------------------------------


@pytest.mark.checklist("SEC-SECRETS-NOT-IN-CODE")
def test_detect_secrets_finds_nothing_unaudited(repo: Repo, evidence: EvidenceLog) -> None:
    """Secrets in code leak to everyone with read access and cannot be rotated cleanly."""
    from detect_secrets.core.secrets_collection import SecretsCollection  # noqa: PLC0415
    from detect_secrets.settings import default_settings  # noqa: PLC0415

    files = _repository_files(repo.root)
    scanned = [f for f in files if not f.startswith(FIXTURE_TREES)]
    collection = SecretsCollection(root=str(repo.root))
    with default_settings():
        # One file at a time in this process: scan_files forks a multiprocessing pool, and a
        # fork of the multi-threaded run process can deadlock on a lock held mid-acquire.
        for name in scanned:
            collection.scan_file(name)
    audited = {(e["file"], e["hashed_secret"]) for e in yaml.safe_load(ALLOWLIST.read_text())}
    found = [
        (name, s)
        for name, s in collection
        if (name, s.secret_hash) not in audited
        and not _is_a_name(s.type, s.secret_value)
        and not _is_published(repo.root, name, s.line_number)
    ]
    evidence.figure("files scanned", len(scanned))
    evidence.note(
        f"fixture trees not scanned: {', '.join(FIXTURE_TREES)}; audited findings: {len(audited)}"
    )
    assert not found, (
        f"detect-secrets must find no unaudited secret in the repository "
        f"(got a {found[0][1].type} in {found[0][0]} line {found[0][1].line_number})"
    )


@pytest.mark.checklist("SEC-SECRETS-NOT-IN-CODE")
def test_deployment_config_holds_no_secret_values(repo: Repo, evidence: EvidenceLog) -> None:
    """A secret typed into a config file is committed with it; config must only point at secrets."""
    values: list[tuple[str, str, Any]] = []
    for word, rest in dockerfile_instructions(repo.dockerfile):
        if word in ("ENV", "ARG"):
            for pair in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest):
                values.append((f"{repo.relative(repo.dockerfile)} {word}", *pair))
    for name, service in compose(repo.compose).services.items():
        env = service.get("environment") or {}
        for key, value in env.items() if isinstance(env, dict) else []:
            values.append((f"compose service {name}", key, value))
    for m in manifests(repo.k8s):
        if m.kind == "Secret":
            carries = bool(m.doc.get("data")) or bool(m.doc.get("stringData"))
            assert not carries, (
                f"{m.ref} must not carry secret values in the repository (it has data)"
            )
        if m.kind == "ConfigMap":
            values += [(m.ref, k, v) for k, v in (m.doc.get("data") or {}).items()]
        for container in m.containers():
            values += [
                (m.ref, e["name"], e["value"]) for e in container.get("env", []) if "value" in e
            ]
    evidence.figure("settings checked", len(values))
    literal = [
        (where, key)
        for where, key, value in values
        if SECRET_NAME.search(key) and str(value).strip()
    ]
    assert not literal, (
        f"{literal[0][0]} must not set {literal[0][1]} to a value "
        "(point it at a secret file or store)"
    )


def _is_a_name(kind: str, value: str | None) -> bool:
    """detect-secrets' keyword heuristic flags every `*_KEY = "..."`; a value of letters and
    separators only (an env var, header or object name: PREFLIGHT_API_KEY, X-API-Key,
    chatsdk-secrets) names a secret, it is not one. Generated secrets contain digits."""
    return kind == "Secret Keyword" and bool(value) and bool(NAME_LIKE.fullmatch(value or ""))


def _is_published(root: Path, name: str, line_number: int) -> bool:
    """A public key or a signature in the key registry or a signed statement: published on
    purpose, not a secret (a private key anywhere, or these fields elsewhere, still count)."""
    path = Path(name)
    relative = path.relative_to(root).as_posix() if path.is_absolute() else path.as_posix()
    if not any(fnmatch.fnmatch(relative, pattern) for pattern in SIGNED_FILES):
        return False
    lines = (root / relative).read_text().splitlines()
    return 0 < line_number <= len(lines) and bool(PUBLIC_FIELD.match(lines[line_number - 1]))


def _repository_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files (what a commit would hold), relative."""
    result = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{root} is not a git work tree: {result.stderr.decode().strip()}")
    return [f for f in result.stdout.decode().split("\0") if f and (root / f).is_file()]
