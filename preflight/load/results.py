"""What a load run measured, as the decisions and the record read it: the figures with the scale
each was measured at, whether the run is evidence, and why a figure is absent."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoadFigure:
    """One measured figure from the load runner, and the scale the profile actually reached."""

    metric: str
    measured: float
    scale_reached: Mapping[str, int]  # e.g. {"users": 500, "ws_connections": 1000}
    unit: str = ""


@dataclass(frozen=True)
class LoadResults:
    """What the load runner measured. `reason` says why nothing ran, or why the run ended early.
    `valid` is False when the run cannot count as evidence (the load generator itself saturated):
    its figures are kept for the record, and every load item stays unverified with
    `invalid_reason`. `details` holds the record's view of the run: per request type stats, the
    time series, the generator's CPU. `absent` says, per metric, why it has no figure (no
    earlier run to compare with, a field the target file lacks): an item on that metric stays
    unverified with that sentence, which tells the reader what to do, rather than the generic
    "did not measure"."""

    profile: str
    ran: bool
    reason: str = ""
    figures: Mapping[str, LoadFigure] = field(default_factory=dict)
    valid: bool = True
    invalid_reason: str = ""
    scale_reached: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    absent: Mapping[str, str] = field(default_factory=dict)  # metric -> why it has no figure

    def to_json(self) -> dict[str, Any]:
        return {
            **self.details,
            "profile": self.profile,
            "ran": self.ran,
            "reason": self.reason,
            "valid": self.valid,
            "invalid_reason": self.invalid_reason,
            "scale_reached": dict(self.scale_reached),
            "figures": {
                name: {
                    "measured": f.measured,
                    "unit": f.unit,
                    "scale_reached": dict(f.scale_reached),
                }
                for name, f in self.figures.items()
            },
            "absent": dict(self.absent),
        }


def with_absent(load: LoadResults, metric: str, why: str) -> LoadResults:
    """`load` with `metric` absent for the reason `why`."""
    return dataclasses.replace(load, absent={**load.absent, metric: why})
