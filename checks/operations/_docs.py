"""Reading the operations docs (system/docs/operations/*.md) the way an on-call engineer would: by
section, by command, and by the repository paths and `preflight` subcommands they name, which
must exist (a runbook that names a removed command fails at 3 a.m.)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from checks.deployment._artefacts import Repo
from preflight.cli import build_parser

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:system|docs|scripts|checks|preflight|loadtests)/[\w./-]*\w)"
)
PREFLIGHT = re.compile(r"(?<![\w-])preflight\s+([a-z][a-z-]*)")


@dataclass(frozen=True)
class Doc:
    path: Path
    text: str

    def sections(self) -> dict[str, str]:
        """Lower-cased heading -> its text, subsections included, up to the next heading of the
        same or a higher level."""
        marks = list(HEADING.finditer(self.text))
        found = {}
        for i, mark in enumerate(marks):
            level = len(mark.group(1))
            end = next((m.start() for m in marks[i + 1 :] if len(m.group(1)) <= level), None)
            found[mark.group(2).lower()] = self.text[mark.end() : end]
        return found

    def section(self, word: str) -> str:
        """The text of every section whose heading contains `word`."""
        return "\n".join(body for title, body in self.sections().items() if word in title)


def read(repo: Repo, name: str) -> Doc:
    __tracebackhide__ = True
    path = repo.operations / name
    assert path.is_file(), f"{repo.relative(path)} must exist in the repository (it does not)"
    return Doc(path, path.read_text())


def commands(text: str) -> list[str]:
    """Shell lines of fenced blocks and inline code spans."""
    lines = [line.strip() for block in FENCE.findall(text) for line in block.splitlines()]
    return [line for line in [*lines, *INLINE.findall(text)] if line and not line.startswith("#")]


def dangling(repo: Repo, doc: Doc) -> list[str]:
    """Repository paths and `preflight` subcommands the doc names that do not exist."""
    code = "\n".join(commands(doc.text))
    subcommands = set(_subcommands())
    missing = [f"`preflight {s}`" for s in PREFLIGHT.findall(code) if s not in subcommands]
    for found in REPO_PATH.findall(code):
        if not (repo.root / found).exists():
            missing.append(found)
    return missing


def _subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            return list(choices)
    return []
