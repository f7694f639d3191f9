"""The sample record of tests/records.py names real probes: each test it lists is one pytest
collects in checks/ today, for the item it decides there."""

from __future__ import annotations

from pathlib import Path

from preflight.plugin import collect_probes
from tests.records import make_record

REPO = Path(__file__).resolve().parents[1]


def test_every_probe_the_sample_record_names_is_collected_for_its_items() -> None:
    collected = collect_probes([REPO / "checks"], REPO / "checklist.yaml").collected
    record = make_record()
    named = [(t["nodeid"], t["items"]) for item in record["items"] for t in item["tests"]]
    named += [(d["nodeid"], d["items"]) for d in record["drills"]]
    assert named, "the sample record names no probe"
    stale = [
        (nodeid, item_id)
        for nodeid, items in named
        for item_id in items
        if nodeid not in collected.get(item_id, [])
    ]
    assert stale == [], "tests/records.py names probes checks/ does not have for these items"
