"""The native target as a package: target.py wires the parts (postgres.py, redis.py, workers.py,
nginx.py, supervisor.py) and the native-only helpers (observability.py, backups.py,
releases.py); this module names what the rest of preflight may import. The error tracker's
stand-in, which the containers target runs too, is preflight/targets/errortracker.py."""

from __future__ import annotations

from preflight.targets.native.options import NativeOptions, NativeTestOptions
from preflight.targets.native.target import NativeTarget
from preflight.targets.native.workdir import TEMP_PREFIX, sweep_stale_dirs

__all__ = [
    "TEMP_PREFIX",
    "NativeOptions",
    "NativeTarget",
    "NativeTestOptions",
    "sweep_stale_dirs",
]
