"""system/deploy/docker-compose.yml as the containers target reads it: each service's image,
replicas, environment, secrets, volumes, networks, published ports, health check, restart policy,
limits and hardening, in the form the Docker engine's API takes.

The target starts exactly what this file says; the few things a test deployment must change
(which host ports to publish, the browser origin, where the edge's configuration lives) are
applied by the target as named overrides, never by editing what the file declares."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from preflight.errors import TargetUnavailable
from preflight.targets.containers.images import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "system" / "deploy" / "docker-compose.yml"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$", re.IGNORECASE)


class ComposeInvalid(TargetUnavailable):
    """The compose file cannot be run as written; the message names the service and field."""


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume, or a path relative to the compose file's folder
    target: str
    read_only: bool = False

    @property
    def named(self) -> bool:
        return not self.source.startswith((".", "/"))


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    dockerfile: str | None  # relative to the repository, when the service builds its image
    replicas: int = 1
    environment: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    healthcheck: Mapping[str, Any] | None = None  # the engine API's form (nanoseconds)
    restart: str = "no"
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    networks: tuple[str, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()  # (host port, container port)
    depends_on: Mapping[str, str] = field(default_factory=dict)  # service -> condition
    nano_cpus: int | None = None
    mem_limit: int | None = None
    stop_grace_s: float | None = None


@dataclass(frozen=True)
class Compose:
    path: Path
    services: Mapping[str, Service]
    networks: Mapping[str, bool]  # name -> internal
    volumes: tuple[str, ...]
    secrets: Mapping[str, str]  # name -> file, relative to the compose file's folder

    def start_order(self) -> list[str]:
        """Services after everything they depend on."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise ComposeInvalid(f"{self.path.name}: services depend on each other in a cycle")
            visiting.add(name)
            for dep in self.services[name].depends_on:
                if dep not in self.services:
                    raise ComposeInvalid(
                        f"{self.path.name}: service {name} depends on {dep}, which is not defined"
                    )
                visit(dep)
            visiting.discard(name)
            order.append(name)

        for name in self.services:
            visit(name)
        return order

    def waves(self) -> list[list[str]]:
        """The start order in waves: each service in the first wave after everything it depends
        on, so that services which do not wait for each other start together."""
        level: dict[str, int] = {}
        for name in self.start_order():
            deps = self.services[name].depends_on
            level[name] = 1 + max((level[d] for d in deps), default=-1)
        return [
            [name for name in level if level[name] == n] for n in range(max(level.values()) + 1)
        ]


def load(path: Path = COMPOSE_FILE) -> Compose:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ComposeInvalid(f"{path}: cannot be read as YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ComposeInvalid(f"{path}: has no `services` mapping")
    services = {name: _service(path, name, spec or {}) for name, spec in doc["services"].items()}
    networks = {
        name: bool((spec or {}).get("internal", False))
        for name, spec in (doc.get("networks") or {}).items()
    }
    secrets = {
        name: str((spec or {}).get("file", "")) for name, spec in (doc.get("secrets") or {}).items()
    }
    compose = Compose(path, services, networks, tuple(doc.get("volumes") or ()), secrets)
    for service in services.values():
        for net in service.networks:
            if net not in networks:
                raise ComposeInvalid(f"{path.name}: service {service.name} joins undefined {net}")
        for secret in service.secrets:
            if not secrets.get(secret):
                raise ComposeInvalid(
                    f"{path.name}: service {service.name} uses secret {secret}, which has no file"
                )
    return compose


def _service(path: Path, name: str, spec: Mapping[str, Any]) -> Service:
    where = f"{path.name}: service {name}"
    image = spec.get("image")
    if not isinstance(image, str):
        raise ComposeInvalid(f"{where}: `image` must name the image")
    build = spec.get("build")
    dockerfile = None
    if isinstance(build, dict):
        context = (path.parent / str(build.get("context", "."))).resolve()
        dockerfile = str(
            (context / str(build.get("dockerfile", "Dockerfile"))).relative_to(REPO_ROOT)
        )
    deploy = spec.get("deploy") or {}
    limits = ((deploy.get("resources") or {}).get("limits")) or {}
    return Service(
        name=name,
        image=image,
        dockerfile=dockerfile,
        replicas=int(deploy.get("replicas", 1)),
        environment={str(k): str(v) for k, v in (spec.get("environment") or {}).items()},
        command=tuple(_literal(where, c) for c in spec["command"]) if spec.get("command") else None,
        healthcheck=_healthcheck(where, spec.get("healthcheck")),
        restart=str(spec.get("restart", "no")),
        read_only=bool(spec.get("read_only", False)),
        tmpfs=tuple(spec.get("tmpfs") or ()),
        security_opt=tuple(spec.get("security_opt") or ()),
        cap_drop=tuple(spec.get("cap_drop") or ()),
        secrets=tuple(str(s) for s in spec.get("secrets") or ()),
        mounts=tuple(_mount(where, v) for v in spec.get("volumes") or ()),
        networks=tuple(spec.get("networks") or ()),
        ports=tuple(_port(where, p) for p in spec.get("ports") or ()),
        depends_on=_depends(spec.get("depends_on")),
        nano_cpus=int(float(limits["cpus"]) * 1e9) if "cpus" in limits else None,
        mem_limit=_bytes(where, str(limits["memory"])) if "memory" in limits else None,
        stop_grace_s=seconds(str(spec["stop_grace_period"]))
        if "stop_grace_period" in spec
        else None,
    )


def seconds(value: str) -> float:
    """A compose duration (`1m30s`, `10s`, `500ms`) in seconds."""
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
        raise ComposeInvalid(f"not a compose duration: {value!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _healthcheck(where: str, spec: Any) -> dict[str, Any] | None:
    if not spec:
        return None
    test = spec.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not isinstance(test, list) or not test:
        raise ComposeInvalid(f"{where}: healthcheck.test must be a command")
    out: dict[str, Any] = {"test": [_literal(where, t) for t in test]}
    for key in ("interval", "timeout", "start_period"):
        if key in spec:
            out[key] = int(seconds(str(spec[key])) * 1e9)
    if "retries" in spec:
        out["retries"] = int(spec["retries"])
    return out


def _literal(where: str, value: Any) -> str:
    """A command word as compose passes it on: `$$` is a literal `$`. Variable interpolation
    (`${NAME}`) is not supported: the file names every value itself."""
    text = str(value)
    if re.search(r"(?<!\$)\$(\{|[A-Za-z_])", text.replace("$$", "")):
        raise ComposeInvalid(f"{where}: {text[:60]!r} interpolates a variable; write the value")
    return text.replace("$$", "$")


def _mount(where: str, value: Any) -> Mount:
    if not isinstance(value, str) or ":" not in value:
        raise ComposeInvalid(f"{where}: volume {value!r} must be source:target[:ro]")
    source, target, *mode = value.split(":")
    return Mount(source, target, read_only=mode == ["ro"])


def _port(where: str, value: Any) -> tuple[int, int]:
    parts = str(value).split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ComposeInvalid(f"{where}: port {value!r} must be host:container")
    return int(parts[0]), int(parts[1])


def _depends(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        return {str(v): "service_started" for v in value}
    return {
        str(k): str((v or {}).get("condition", "service_started")) for k, v in (value or {}).items()
    }


def _bytes(where: str, value: str) -> int:
    m = _SIZE.match(value.strip())
    if m is None:
        raise ComposeInvalid(f"{where}: memory {value!r} is not a size")
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


def replicas_of(service: Service) -> Sequence[str]:
    """The container names (and DNS aliases) of a service's replicas: api-1, api-2, ..."""
    return [f"{service.name}-{i}" for i in range(1, service.replicas + 1)]
