"""`preflight checklist validate` and `show`: the checklist checked against its schema, or
listed with what decides each item."""

from __future__ import annotations

import argparse
from pathlib import Path

from preflight.checklist import AREAS, DEFAULT_PATH, Item, load_checklist
from preflight.cli._args import command_group
from preflight.errors import PreflightError
from preflight.plugin import collect_probes

EXIT_OK = 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `checklist`; it sets `handler=` (args -> exit code)."""
    actions = command_group(
        sub,
        "checklist",
        help="validate or list the checklist",
        description="Validate checklist.yaml against its schema and rules, or list its items.",
        dest="checklist_command",
        handler=cmd_checklist,
    )
    validate = actions.add_parser(
        "validate",
        help="check the file; exit 0 if valid, 2 listing every problem (item, field, line)",
    )
    validate.add_argument("file", nargs="?", type=Path, default=DEFAULT_PATH, metavar="FILE")
    show = actions.add_parser(
        "show",
        help="list items: id, area, severity, verify, title, and the tests that decide them",
        description=(
            "List the checklist's items. For probe items, the tests in the probe folder marked "
            "with the item (collected without starting a target), or what decides them instead."
        ),
    )
    show.add_argument("file", nargs="?", type=Path, default=DEFAULT_PATH, metavar="FILE")
    show.add_argument("--area", choices=AREAS, help="only items of this area")
    show.add_argument("--checks", type=Path, default=Path("checks"), help="probe folder (checks/)")


def cmd_checklist(args: argparse.Namespace) -> int:
    checklist = load_checklist(args.file)
    if args.checklist_command == "validate":
        print(checklist.summary())
        return EXIT_OK
    items = [i for i in checklist.items if args.area is None or i.area == args.area]
    deciders = _deciding_tests(checklist.path, args.checks)
    columns = ("id", "area", "severity", "verify", "title")
    rows = [columns, *((i.id, i.area, i.severity, i.verify, i.title) for i in items)]
    widths = [max(len(row[n]) for row in rows) for n in range(len(columns) - 1)]
    for n, row in enumerate(rows):
        print(
            "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]])
        )
        if n and deciders is not None:
            print(f"    decided by: {_decided_by(items[n - 1], deciders)}")
    automated = sum(1 for i in items if i.verify == "probe" and deciders and deciders.get(i.id))
    probes = sum(1 for i in items if i.verify == "probe")
    print(f"{len(items)} of {len(checklist.items)} items", end="")
    print(f"; {automated} of {probes} probe items have a test" if deciders is not None else "")
    return EXIT_OK


def _deciding_tests(checklist_path: Path, checks: Path) -> dict[str, list[str]] | None:
    if not checks.is_dir():
        return None
    collected = collect_probes([checks], checklist_path)
    if collected.errors:
        raise PreflightError(
            f"{checks}: the probes do not collect:\n  " + "\n  ".join(collected.errors)
        )
    return collected.collected


def _decided_by(item: Item, deciders: dict[str, list[str]]) -> str:
    if item.verify == "manual":
        return f"a signed attestation from {item.owner}"
    if item.verify == "signoff":
        return f"{item.owner}'s signature on the run record (preflight sign --role {item.owner})"
    if item.verify == "load":
        scale = ", ".join(f"{k} {v}" for k, v in item.scale.items())
        return f"the load profile: {item.metric} {item.comparison} {item.value:g}" + (
            f" at {scale}" if scale else ""
        )
    tests = deciders.get(item.id, [])
    decided = ", ".join(tests) if tests else "no test yet (unverified)"
    return f"{decided}, and a signed attestation from {item.owner}" if item.attest else decided
