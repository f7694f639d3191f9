"""The repository's deployment artefacts as the artefact probes see them: the Dockerfile, the
compose file, the Kubernetes manifests, the operations docs and the changelog, each read through
the real tool that validates it (hadolint, `docker-compose config`, kubernetes-validate --strict).

Which repository: `--repo-dir DIR` (registered in checks/conftest.py; default: the repository
these probes live in), so tests can point the same probes at a deliberately broken copy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOL_TIMEOUT_S = 60.0
# Kinds from operators (CRDs) for which kubernetes-validate ships no schema; the operator
# validates them on apply. Anything else without a schema is an error, not a pass.
CRD_KINDS = frozenset({("external-secrets.io/v1", "ExternalSecret")})
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# API pods: the REST workers and the realtime tier (the same image, see k8s/61-realtime.yaml).
API_COMPONENTS = frozenset({"api", "realtime"})
COMPONENT = "app.kubernetes.io/component"


@dataclass(frozen=True)
class Repo:
    root: Path

    @property
    def deploy(self) -> Path:
        return self.root / "system" / "deploy"

    @property
    def dockerfile(self) -> Path:
        return self.deploy / "Dockerfile"

    @property
    def dockerfiles(self) -> list[Path]:
        """Every image definition the deployment builds: the API's and those under images/."""
        return [self.dockerfile, *sorted((self.deploy / "images").glob("*/Dockerfile"))]

    @property
    def compose(self) -> Path:
        return self.deploy / "docker-compose.yml"

    @property
    def k8s(self) -> Path:
        return self.deploy / "k8s"

    @property
    def operations(self) -> Path:
        return self.root / "system" / "docs" / "operations"

    @property
    def changelog(self) -> Path:
        return self.root / "CHANGELOG.md"

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def repo_of(config: pytest.Config) -> Repo:
    chosen = config.getoption("repo_dir", default=None)
    return Repo(Path(chosen).resolve() if chosen else REPO)


def tool(name: str) -> str:
    """A tool next to this Python (the venv's hadolint, kubernetes-validate) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed; run scripts/setup.sh")
    return found


# -- Kubernetes ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # identity: one object per document, hashable for caching
class Manifest:
    file: str  # relative to the repository
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name", ""))

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name} in {self.file}"

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.doc.get("spec", {}).get("template", {}).get("spec", {})
        return spec

    @property
    def component(self) -> str:
        labels = self.doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
        return str((labels or self.doc.get("metadata", {}).get("labels") or {}).get(COMPONENT))

    def containers(self) -> list[dict[str, Any]]:
        spec = self.pod_spec
        return [*spec.get("initContainers", []), *spec.get("containers", [])]


@cache
def manifests(k8s_dir: Path) -> tuple[Manifest, ...]:
    root = k8s_dir.parents[2]
    found = []
    for path in sorted([*k8s_dir.glob("*.yaml"), *k8s_dir.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                found.append(Manifest(str(path.relative_to(root)), doc))
    if not found:
        raise RuntimeError(f"no Kubernetes manifests in {k8s_dir}")
    return tuple(found)


@cache
def schema_problem(manifest: Manifest) -> str | None:
    """kubernetes-validate --strict's objection to one object, or None."""
    doc = manifest.doc
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        return f"{manifest.ref} fails kubernetes-validate --strict at {where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError:
        if (doc.get("apiVersion"), doc.get("kind")) not in CRD_KINDS:
            return f"{manifest.ref} has no Kubernetes schema (apiVersion {doc.get('apiVersion')})"
    return None


def valid(found: list[Manifest], what: str) -> list[Manifest]:
    """The objects an item relies on: at least one, each schema-valid."""
    __tracebackhide__ = True
    assert found, f"the Kubernetes manifests must define {what} (found none)"
    problems = [p for m in found if (p := schema_problem(m))]
    assert not problems, problems[0]
    return found


def of_kind(k8s_dir: Path, kind: str) -> list[Manifest]:
    return [m for m in manifests(k8s_dir) if m.kind == kind]


def workloads(k8s_dir: Path) -> list[Manifest]:
    return [m for m in manifests(k8s_dir) if m.kind in WORKLOAD_KINDS]


def api_deployments(k8s_dir: Path) -> list[Manifest]:
    return [m for m in of_kind(k8s_dir, "Deployment") if m.component in API_COMPONENTS]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist)
    matches these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(manifest: Manifest) -> dict[str, str]:
    labels = manifest.doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
    return dict(labels or {})


# -- Compose ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compose:
    file: str
    services: dict[str, dict[str, Any]]


@cache
def compose(path: Path) -> Compose:
    """The compose file as `docker-compose config` resolves it; an invalid file fails the item."""
    __tracebackhide__ = True
    if not path.is_file():
        raise AssertionError(f"{path} must exist (it does not)")
    result = subprocess.run(
        [
            tool("docker-compose"),
            "--project-directory",
            str(path.parent),
            "-f",
            str(path),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=path.parent,
    )
    if result.returncode != 0:
        problem = " ".join(result.stderr.split())[:300]
        raise AssertionError(f"{path.name} must pass `docker-compose config` (got: {problem})")
    resolved = yaml.safe_load(result.stdout)
    return Compose(path.name, dict(resolved.get("services") or {}))


# -- Dockerfile ------------------------------------------------------------------------------


@cache
def hadolint(path: Path) -> tuple[dict[str, Any], ...]:
    """hadolint's findings (JSON), every severity."""
    if not path.is_file():
        raise AssertionError(f"{path} must exist (it does not)")
    result = subprocess.run(
        [tool("hadolint"), "--no-fail", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip().startswith("["):
        raise RuntimeError(f"hadolint could not lint {path}: {result.stderr.strip()[:300]}")
    return tuple(json.loads(result.stdout))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


# -- Images ----------------------------------------------------------------------------------

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# An exact release in the tag: 15.8, 7.2.5, 0.1.0, RELEASE.2025-04-22T22-12-26Z (MinIO's tags).
EXACT_TAG = re.compile(r":(v?\d+\.\d+(\.\d+)?([.-][0-9A-Za-z.-]+)?|RELEASE\.[0-9T:-]+Z)$")


def image_pin_problem(image: str) -> str | None:
    if DIGEST.search(image):
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return "has no tag (means :latest)"
    if not EXACT_TAG.search(name):
        return "is not pinned to a digest or an exact version"
    return None


def images(repo: Repo) -> Iterator[tuple[str, str]]:
    """(where, image reference) for every image the deployment artefacts run or build from. A
    FROM that names a build argument (`FROM ${BASE}`) is the argument's default: what a build
    without --build-arg pulls."""
    for dockerfile in repo.dockerfiles:
        args: dict[str, str] = {}
        for word, rest in dockerfile_instructions(dockerfile):
            if word == "ARG" and "=" in rest:
                name, _, default = rest.partition("=")
                args[name.strip()] = default.strip().strip('"')
            if word == "FROM":
                image = _with_args(rest.split()[0], args)
                if image.lower() != "scratch" and not _is_stage(dockerfile, image):
                    yield repo.relative(dockerfile), image
    for name, service in compose(repo.compose).services.items():
        if "image" in service:
            yield f"{repo.relative(repo.compose)} service {name}", str(service["image"])
    for m in workloads(repo.k8s):
        for c in m.containers():
            yield f"{m.ref} container {c.get('name')}", str(c.get("image", ""))


def _with_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def _is_stage(dockerfile: Path, image: str) -> bool:
    stages = {
        rest.split()[-1].lower()
        for word, rest in dockerfile_instructions(dockerfile)
        if word == "FROM" and " as " in rest.lower()
    }
    return image.lower() in stages
