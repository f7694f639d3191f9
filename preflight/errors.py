"""One exception root for the harness; every error a user can see says what and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar


class PreflightError(Exception):
    """Root of every error the harness raises on purpose (exit code 2 at the CLI)."""


class TargetUnavailable(PreflightError):
    """A target could not be brought up or reached; the message names the component and the fix."""


class FileInvalid(PreflightError):
    """A YAML file the harness reads breaks its rules; `problems` names entry, field and line."""

    noun: ClassVar[str] = "file"

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(
            f"{path} is not a valid {self.noun} ({count}):\n  " + "\n  ".join(problems)
        )


class TargetFileInvalid(FileInvalid):
    """A target file is missing a field or has a bad value; every problem names line and field."""

    noun = "target file"


class EdgeConfigInvalid(PreflightError):
    """The rendered NGINX configuration does not render or does not pass `nginx -t`."""


class ChecklistInvalid(PreflightError):
    """checklist.yaml breaks its schema or rules; `problems` names item id, field and line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{path} is not a valid checklist ({count}):\n  " + "\n  ".join(problems))
