"""The containers target's releases (base.ReleaseControl), deployed the way a team deploys
containers: a release is an image, and a deploy replaces a worker's container with one on it.

A release directory (a `chatsdk` package: the rehearsal candidate the native target's releases
module builds, so both targets rehearse the same release) becomes an image built on this
machine's engine `FROM` the API image built for the run, with the package in place of the one
at /opt/chatsdk/app (system/deploy/Dockerfile); it is tagged by a digest of its inputs (the base
image's id and the package's files), so the same release is built once. None is the run's
original image.

`deploy(worker, release)` does what `docker-compose up` does to a service whose image changed,
or a rolling update to a pod: the old container is stopped gracefully (SIGTERM, its
stop_grace_period; the worker drains itself) and removed, and a new one starts with the same
name, aliases, networks, environment, secrets, mounts, limits, health check, labels and
published port on the release's image. The edge finds the new container's address by itself
(system/deploy/images/nginx/edge-entrypoint.sh reloads NGINX when an upstream's name resolves
anew); the drills' control, processes and restarts of the worker follow the new container, and
its worker URL is the same published port."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preflight.errors import PreflightError, TargetUnavailable
from preflight.targets.containers.control import ContainerControl
from preflight.targets.containers.images import LABEL, _digest, _exists, build
from preflight.targets.native.releases import EXPAND_MIGRATION, build_candidate

RELEASE_REPOSITORY = "preflight/api-release"
APP_DIR = "/opt/chatsdk/app"  # where system/deploy/Dockerfile installs the chatsdk package
APP_USER = "10001:10001"  # the user system/deploy/Dockerfile runs the API as
DOCKERFILE = f"""\
ARG BASE
FROM ${{BASE}}
USER root
RUN rm -rf {APP_DIR}/chatsdk
COPY chatsdk {APP_DIR}/chatsdk
USER {APP_USER}
"""

Log = Callable[[str], None]


def release_image(client: Any, base: str, release: Path, log: Log) -> str:
    """The tag of the image of `release` on `base` (the run's API image), built if missing."""
    package = release / "chatsdk"
    if not (package / "__init__.py").is_file():
        raise TargetUnavailable(f"release {release} holds no chatsdk package (chatsdk/__init__.py)")
    context = _context(package)
    base_id = client.images.get(base).id
    tag = f"{RELEASE_REPOSITORY}:{_digest(json.dumps([DOCKERFILE, base_id]).encode(), context)}"
    if _exists(client, tag):
        return tag
    log(f"building release image {tag} from {release} on {base}")
    build(
        client,
        f"release image {tag} ({release})",
        lambda line: log(f"  release: {line}"),
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        buildargs={"BASE": base},
        labels={LABEL: "api-release"},
    )
    return tag


def _context(package: Path) -> bytes:
    """The build context: the Dockerfile and the package, owned by root and readable by all,
    with no timestamps, so the same package gives the same bytes (and tag)."""

    def normal(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dockerfile = tarfile.TarInfo("Dockerfile")
        dockerfile.size = len(DOCKERFILE.encode())
        tar.addfile(normal(dockerfile), io.BytesIO(DOCKERFILE.encode()))
        for path in sorted(package.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            arcname = f"chatsdk/{path.relative_to(package).as_posix()}"
            info = normal(tar.gettarinfo(str(path), arcname))
            if info.isfile():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)
    return data.getvalue()


@dataclass
class ContainerReleases:
    """ReleaseControl of the containers target. `replace(worker, image)` removes the worker's
    stopped container and starts its successor on `image`, returning it (docker SDK)."""

    workers: tuple[str, ...]
    client: Any
    image: str  # the API image built for this run: release None
    controls: Mapping[str, ContainerControl]
    replace: Callable[[str, str], Any]
    candidate_dir: Path
    log: Log
    migration: str = EXPAND_MIGRATION
    build_seconds: dict[str, float] = field(default_factory=dict)  # release image -> its build

    def image_of(self, release: Path | None) -> str:
        """The image of a release (built here once)."""
        if release is None:
            return self.image
        started = time.monotonic()
        tag = release_image(self.client, self.image, release, self.log)
        self.build_seconds.setdefault(tag, round(time.monotonic() - started, 3))
        return tag

    def deploy(self, worker: str, release: Path | None) -> int | None:
        """Replace `worker`'s container with one on `release`'s image (built before the old one
        stops); the old container's exit code."""
        if worker not in self.workers:
            raise PreflightError(f"no API worker named {worker} in this target ({self.workers})")
        image = self.image_of(release)
        control = self.controls[worker]
        code = control.stop()
        self.log(f"replacing {worker} (exit code {code}) with a container on {image}")
        control.container = self.replace(worker, image)
        return code

    def candidate(self) -> Path | None:
        """The rehearsal candidate (the native target's: a copy of the release with one more
        migration), its image built now so that no deploy waits for a build."""
        release = build_candidate(self.candidate_dir, self.migration)
        self.image_of(release)
        return release
