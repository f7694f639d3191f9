"""The containers target's images, built on this machine: nothing is pulled from a registry.

Base images are Debian root file systems made with `debootstrap --variant=minbase` and
`docker import`ed (bookworm, and trixie for PostgreSQL 17 and its pg_dump). Every other image is
built from a Dockerfile in system/deploy with `BASE` pointed at one of them; the API's Python
packages come from a wheelhouse downloaded on the host (pip inside a container may not reach or
verify PyPI). Each image is tagged by a digest of its inputs (the Dockerfile, the files it
copies, its base's id, its build arguments), so a second run finds every tag and builds nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable

REPO_ROOT = Path(__file__).resolve().parents[3]
MIRROR = os.environ.get("PREFLIGHT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
LABEL = "io.preflight.image"  # on every image built here: `docker image ls -f label=...`
WHEELS = REPO_ROOT / "system" / "deploy" / "wheels"
REQUIREMENTS = REPO_ROOT / "system" / "deploy" / "requirements.txt"
DIGEST_LEN = 12

Log = Callable[[str], None]


@dataclass(frozen=True)
class Base:
    """A Debian root file system, imported as an image."""

    suite: str  # bookworm, trixie
    include: tuple[str, ...] = ("ca-certificates",)

    def tag(self) -> str:
        inputs = json.dumps([self.suite, self.include, MIRROR, _debootstrap_version()])
        return f"preflight/base:{self.suite}-{_digest(inputs.encode())}"


BOOKWORM = Base("bookworm")
TRIXIE = Base("trixie")


@dataclass(frozen=True)
class Image:
    """An image built from a Dockerfile in the repository, with the repository as context."""

    name: str  # preflight/<name>:<digest>
    dockerfile: str  # relative to the repository
    base: Base | str  # a Debian base, or the name of another Image built first
    inputs: tuple[str, ...] = ()  # the files and folders its COPY lines read, besides itself
    build_args: Mapping[str, str] = field(default_factory=dict)
    wheels: bool = False  # needs the wheelhouse in system/deploy/wheels


IMAGES: tuple[Image, ...] = (
    Image(
        "postgres",
        "system/deploy/images/postgres/Dockerfile",
        TRIXIE,
        (
            "system/deploy/images/postgres/entrypoint.sh",
            "system/deploy/images/postgres/sync-guard.sh",
        ),
    ),
    Image("redis", "system/deploy/images/redis/Dockerfile", BOOKWORM),
    Image(
        "nginx",
        "system/deploy/images/nginx/Dockerfile",
        BOOKWORM,
        ("system/deploy/images/nginx/edge-entrypoint.sh",),
    ),
    Image("python", "system/deploy/images/python/Dockerfile", BOOKWORM),
    Image(
        "api",
        "system/deploy/Dockerfile",
        "python",
        ("system/deploy/requirements.txt", "system/deploy/entrypoint.sh", "system/chatsdk"),
        {"PIP_INSTALL_FLAGS": "--no-index --find-links /wheels"},
        wheels=True,
    ),
    Image(
        "backup",
        "system/deploy/images/backup/Dockerfile",
        TRIXIE,
        ("system/chatsdk", "system/deploy/entrypoint.sh"),
    ),
    Image("prometheus", "system/deploy/images/prometheus/Dockerfile", BOOKWORM),
    Image("alertmanager", "system/deploy/images/alertmanager/Dockerfile", BOOKWORM),
    Image("exporters", "system/deploy/images/exporters/Dockerfile", BOOKWORM),
    Image(
        "container-exporter",
        "system/deploy/images/container-exporter/Dockerfile",
        "python",
        (
            "system/deploy/images/container-exporter/requirements.txt",
            "system/deploy/images/container-exporter/container_exporter.py",
        ),
        {"PIP_INSTALL_FLAGS": "--no-index --find-links /wheels"},
        wheels=True,
    ),
    Image(
        "certbot",
        "system/deploy/images/certbot/Dockerfile",
        BOOKWORM,
        ("system/deploy/images/certbot/edge-certificate.sh",),
    ),
    Image("logstore", "system/deploy/images/logstore/Dockerfile", BOOKWORM),
    # Not a service of the compose file: the ACME CA the containers target runs (acme.py).
    Image("pebble", "system/deploy/images/pebble/Dockerfile", BOOKWORM),
)


class ImageBuildFailed(TargetUnavailable):
    """An image could not be built: the message names it and the cause, in one sentence."""


BUILD_LOCK = Path("/run/lock" if Path("/run/lock").is_dir() else tempfile.gettempdir())


def build_all(client: Any, log: Log, images: Sequence[Image] = IMAGES) -> dict[str, str]:
    """Every image's tag (name -> preflight/<name>:<digest>), building the ones missing. One
    process of this machine builds at a time (a file lock): another one that needs the same
    images waits, then finds them built, rather than building them twice side by side."""
    with (BUILD_LOCK / "preflight-image-build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_all(client, log, images)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_all(client: Any, log: Log, images: Sequence[Image]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for base in {i.base for i in images if isinstance(i.base, Base)}:
        ensure_base(client, base, log)
    for image in images:
        base_tag = image.base.tag() if isinstance(image.base, Base) else tags[image.base]
        if image.wheels:
            ensure_wheelhouse(log)
        tags[image.name] = ensure_image(client, image, base_tag, log)
    return tags


def ensure_base(client: Any, base: Base, log: Log) -> str:
    tag = base.tag()
    if _exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildFailed(
            f"image {tag}: debootstrap is not installed (apt-get install debootstrap; "
            "scripts/setup.sh installs it)"
        )
    if os.geteuid() != 0:
        raise ImageBuildFailed(f"image {tag}: debootstrap needs root (run as root, or sudo)")
    log(f"building base image {tag}: debootstrap {base.suite} from {MIRROR} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="preflight-rootfs-") as tmp:
        root = Path(tmp) / "root"
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(base.include)}",
            base.suite,
            str(root),
            MIRROR,
        ]
        _run(cmd, f"image {tag}: debootstrap {base.suite}")
        # Keep the image small: no apt lists or caches (every Dockerfile runs apt-get update).
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        tarball = Path(tmp) / "root.tar"
        _run(["tar", "-C", str(root), "-cf", str(tarball), "."], f"image {tag}: packing the root")
        repository, _, version = tag.partition(":")
        with tarball.open("rb") as data:
            client.api.import_image_from_data(
                data.read(), repository=repository, tag=version, changes=[f"LABEL {LABEL}=base"]
            )
    return tag


def ensure_wheelhouse(log: Log) -> None:
    """The wheels of requirements.txt in system/deploy/wheels, downloaded once per lock."""
    marker = WHEELS / ".requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == want:
        return
    log(f"downloading the API image's wheels into {WHEELS.relative_to(REPO_ROOT)}")
    for old in WHEELS.glob("*.whl"):
        old.unlink()
    _run(
        [
            sys.executable if _has_pip(sys.executable) else "python3",
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(REQUIREMENTS),
            "-d",
            str(WHEELS),
        ],
        "the API image's wheelhouse: pip download",
    )
    marker.write_text(want + "\n")


def ensure_image(client: Any, image: Image, base_tag: str, log: Log) -> str:
    base_id = client.images.get(base_tag).id
    args = {"BASE": base_tag, **image.build_args}
    digest = _digest(
        json.dumps([image.dockerfile, base_id, sorted(args.items())]).encode(),
        *(_files_digest(p) for p in (image.dockerfile, *image.inputs)),
    )
    tag = f"preflight/{image.name}:{digest}"
    if _exists(client, tag):
        return tag
    log(f"building image {tag} from {image.dockerfile}")
    build(
        client,
        f"image {tag} ({image.dockerfile})",
        lambda line: log(f"  {image.name}: {line}"),
        path=str(REPO_ROOT),
        dockerfile=image.dockerfile,
        tag=tag,
        buildargs=args,
        labels={LABEL: image.name},
    )
    return tag


def build(client: Any, what: str, log: Log, **kwargs: Any) -> None:
    """Run one build on the engine (docker SDK `api.build` arguments), logging its steps;
    ImageBuildFailed names `what` and the cause."""
    try:
        for chunk in client.api.build(rm=True, forcerm=True, decode=True, **kwargs):
            if "error" in chunk:
                raise ImageBuildFailed(
                    f"{what} failed to build: {str(chunk['error']).strip()[:300]}"
                )
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step "):
                log(line)
    except ImageBuildFailed:
        raise
    except Exception as exc:  # docker.errors.APIError, BuildError, requests errors
        raise ImageBuildFailed(f"{what} failed to build: {type(exc).__name__}: {exc}") from None


def _exists(client: Any, tag: str) -> bool:
    import docker.errors  # noqa: PLC0415 - the docker SDK only where an engine is used

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _files_digest(relative: str) -> bytes:
    """sha256 over the paths and contents of a file or of every file under a folder (what
    .dockerignore leaves out is left out here too: caches)."""
    h = hashlib.sha256()
    for path in _files(REPO_ROOT / relative):
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0" + oct(path.stat().st_mode & 0o777).encode())
    return h.digest()


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            yield p


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:DIGEST_LEN]


def _debootstrap_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "debootstrap"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _has_pip(python: str) -> bool:
    return (
        subprocess.run(
            [python, "-m", "pip", "--version"], capture_output=True, check=False
        ).returncode
        == 0
    )


def _run(cmd: Sequence[str], what: str) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ImageBuildFailed(f"{what} failed (exit {result.returncode}): {' | '.join(tail)}")
