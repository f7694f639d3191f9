"""The team's operations records as the probes read them: the YAML files beside the runbooks
(oncall.yaml, escalation.yaml), and the `Owner:` / `Last reviewed:` or `Date:` lines and the links
that make a Markdown document findable and accountable."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.deployment._artefacts import Repo

ROLES = ("dev-lead", "ops-lead", "security-lead", "product-manager", "cto")
OWNER = re.compile(r"^Owner:\s*(\S.*?)\s*$", re.M)
DATED = re.compile(r"^(?:Last reviewed|Date):\s*(\d{4}-\d{2}-\d{2})\s*$", re.M)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def load_yaml(repo: Repo, name: str) -> dict[str, Any]:
    """A YAML mapping under system/docs/operations; a missing or malformed file fails."""
    __tracebackhide__ = True
    path = repo.operations / name
    assert path.is_file(), f"{repo.relative(path)} must exist in the repository (it does not)"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{repo.relative(path)} must be a YAML mapping"
    return data


def moment(value: object, where: str) -> datetime:
    """A YAML timestamp (or ISO text) as an aware UTC datetime; anything else fails."""
    __tracebackhide__ = True
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), f"{where} must be a date and time (got {value!r})"
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def accountable(repo: Repo, path: Path) -> tuple[str, date]:
    """The document's owner (a sign-off role) and its date, from its first lines."""
    __tracebackhide__ = True
    name = repo.relative(path)
    assert path.is_file(), f"{name} must exist in the repository (it does not)"
    head = "\n".join(path.read_text().splitlines()[:8])
    owner = OWNER.search(head)
    assert owner, f"{name} must name its owner in its first lines (`Owner: <role>`)"
    assert owner.group(1) in ROLES, (
        f"{name} must name its owner in its first lines (`Owner: <{'|'.join(ROLES)}>`)"
    )
    dated = DATED.search(head)
    assert dated, f"{name} must give its date in its first lines (`Last reviewed: YYYY-MM-DD`)"
    return owner.group(1), date.fromisoformat(dated.group(1))


def linked_from(repo: Repo, target: Path, *sources: str) -> None:
    """Fail unless one of the operations docs `sources` links to `target`."""
    __tracebackhide__ = True
    for source in sources:
        doc = repo.operations / source
        if not doc.is_file():
            continue
        links = {(doc.parent / link).resolve() for link in LINK.findall(doc.read_text())}
        if target.resolve() in links:
            return
    pytest.fail(f"{repo.relative(target)} must be linked from {' or '.join(sources)} (it is not)")
