"""How a system under test is reached: native processes, testcontainers, or a target file. This
module names the contract (base.py), the choice of a target (select.py) and the target file's
reader and writer; the concrete targets stay behind it."""

from __future__ import annotations

from preflight.targets.base import (
    Capability,
    Crash,
    RestoredTarget,
    Target,
    TargetDescription,
    TargetInfo,
)
from preflight.targets.external import load_target_file, write_target_file
from preflight.targets.select import Selection, TargetOptions, choose_target, select_target

__all__ = [
    "Capability",
    "Crash",
    "RestoredTarget",
    "Selection",
    "Target",
    "TargetDescription",
    "TargetInfo",
    "TargetOptions",
    "choose_target",
    "load_target_file",
    "select_target",
    "write_target_file",
]
