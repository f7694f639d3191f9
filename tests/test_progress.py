"""The run's terminal progress: one line per checklist item by default, one per probe verbose."""

from __future__ import annotations

import io

from preflight.outcomes import Outcome, ProbeResult
from preflight.progress import Progress

PROBES = {
    "checks/a.py::test_one[x]": ("SEC-A",),
    "checks/a.py::test_one[y]": ("SEC-A",),
    "checks/a.py::test_two": ("SEC-A", "SEC-B"),
    "checks/b.py::test_three": ("SEC-C",),
}


def run(progress: Progress) -> list[str]:
    progress.probes_collected(PROBES)
    outcomes = [Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.SKIP]
    messages = ["", "got 3 of 4", "", "needs a DSN"]
    for (nodeid, items), outcome, message in zip(PROBES.items(), outcomes, messages, strict=True):
        progress.probe_done(ProbeResult(nodeid, items, outcome, message, 0.1), "security")
    assert isinstance(progress.stream, io.StringIO)
    return [line.split("] ", 1)[1] for line in progress.stream.getvalue().splitlines()]


def test_one_line_per_item_once_all_its_probes_are_done() -> None:
    lines = run(Progress(stream=io.StringIO()))
    assert lines == [
        "area security",
        "  fail  SEC-A  (3 probes)  - got 3 of 4 [checks/a.py::test_one[y]]",
        "  pass  SEC-B  (1 probe)",
        "  skip  SEC-C  (1 probe)  - needs a DSN [checks/b.py::test_three]",
    ]


def test_verbose_prints_every_probe() -> None:
    lines = run(Progress(stream=io.StringIO(), verbose=True))
    assert len(lines) == 1 + len(PROBES)
    assert lines[2] == "  fail  SEC-A  checks/a.py::test_one[y]  - got 3 of 4"
