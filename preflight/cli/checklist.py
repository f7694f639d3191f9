"""`preflight checklist validate` and `show`: the checklist checked against its schema, or
listed with what decides each item and the broken systems its red-variant tests turned it red
on."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

from preflight import __version__
from preflight.checklist import DEFAULT_PATH, Item, load_checklist
from preflight.cli._args import add_selection, command_group
from preflight.errors import PreflightError
from preflight.redvariants import RedVariant, red_variants

EXIT_OK = 0
ITEM_ID = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$")


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
    validate.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=DEFAULT_PATH,
        metavar="FILE",
        help="the checklist (default: %(default)s)",
    )
    show = actions.add_parser(
        "show",
        help="list items: id, area, severity, verify, title, the tests that decide them, and "
        "the broken systems shown to turn them red",
        description=(
            "List the checklist's items (all, those of --area, or the ids given). For probe "
            "items, the tests in the probe folder marked with the item (collected without "
            "starting a target), or what decides them instead; for every item, the red-variant "
            "tests (marked turns_red, beside the probe folder in tests/) that showed a "
            "deliberately broken system turns it red, with the defect each seeded."
        ),
    )
    show.add_argument(
        "what",
        nargs="*",
        metavar="[FILE] [ID ...]",
        help=f"the checklist file (default {DEFAULT_PATH.name}) and/or item ids to show",
    )
    add_selection(show)
    show.add_argument("--checks", type=Path, default=Path("checks"), help="probe folder (checks/)")
    show.add_argument(
        "--tests",
        type=Path,
        default=None,
        help="the red-variant tests' folder (default: tests/ beside the probe folder)",
    )


def cmd_checklist(args: argparse.Namespace) -> int:
    if args.checklist_command == "validate":
        print(load_checklist(args.file).summary())
        return EXIT_OK
    ids = [w for w in args.what if ITEM_ID.match(w) and not Path(w).exists()]
    files = [Path(w) for w in args.what if w not in ids]
    if len(files) > 1:
        raise PreflightError(f"one checklist file at most (got {', '.join(map(str, files))})")
    checklist = load_checklist(files[0] if files else DEFAULT_PATH)
    unknown = sorted(set(ids) - {i.id for i in checklist.items})
    if unknown:
        raise PreflightError(f"{checklist.path} has no item {', '.join(unknown)}")
    items = [
        i
        for i in checklist.items
        if (not args.areas or i.area in args.areas)
        and (not args.severities or i.severity in args.severities)
        and (not ids or i.id in ids)
    ]
    deciders = _deciding_tests(checklist.path, args.checks)
    tests = args.tests or args.checks.resolve().parent / "tests"
    shown = red_variants(tests.parent, tests.name) if tests.is_dir() else None
    columns = ("id", "area", "severity", "verify", "title")
    rows = [columns, *((i.id, i.area, i.severity, i.verify, i.title) for i in items)]
    widths = [max(len(row[n]) for row in rows) for n in range(len(columns) - 1)]
    for n, row in enumerate(rows):
        print(
            "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]])
        )
        if n and deciders is not None:
            for line in _decided_by(items[n - 1], deciders):
                print(f"    decided by: {line}")
        if n and shown is not None:
            for line in _shown_able_to_fail(items[n - 1], shown):
                print(f"    shown able to fail by: {line}")
    automated = sum(1 for i in items if i.verify == "probe" and deciders and deciders.get(i.id))
    probes = sum(1 for i in items if i.verify == "probe")
    print(f"{len(items)} of {len(checklist.items)} items", end="")
    print(f"; {automated} of {probes} probe items have a test" if deciders is not None else "")
    return EXIT_OK


def _deciding_tests(checklist_path: Path, checks: Path) -> dict[str, list[str]] | None:
    """Item id -> the node ids of the tests marked with it, as pytest collects them. The
    collection takes seconds, so it is kept in the user's cache, keyed by the probe sources, the
    checklist and this version of preflight: a second listing reads it back."""
    if not checks.is_dir():
        return None
    cached = _cache_file(checklist_path, checks)
    try:
        found: dict[str, list[str]] = json.loads(cached.read_text())
        return found
    except (OSError, ValueError):
        pass
    from preflight.plugin import collect_probes  # noqa: PLC0415 - pytest: only when listing tests

    collected = collect_probes([checks], checklist_path)
    if collected.errors:
        raise PreflightError(
            f"{checks}: the probes do not collect:\n  " + "\n  ".join(collected.errors)
        )
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(collected.collected))
        temporary.replace(cached)
    return collected.collected


def _cache_file(checklist_path: Path, checks: Path) -> Path:
    digest = hashlib.sha256(__version__.encode())
    for path in [checklist_path, *sorted(checks.rglob("*.py"))]:
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "preflight" / f"collected-{digest.hexdigest()[:32]}.json"


def _decided_by(item: Item, deciders: dict[str, list[str]]) -> list[str]:
    """One line per deciding test function; a parametrized one once, with its case count."""
    if item.verify == "manual":
        return [f"a signed attestation from {item.owner}"]
    if item.verify == "signoff":
        return [f"{item.owner}'s signature on the run record (preflight sign --role {item.owner})"]
    if item.verify == "load":
        scale = ", ".join(f"{k} {v}" for k, v in item.scale.items())
        return [
            f"the load profile: {item.metric} {item.comparison} {item.value:g}"
            + (f" at {scale}" if scale else "")
        ]
    cases: dict[str, int] = {}
    for nodeid in deciders.get(item.id, []):
        function = nodeid.split("[", 1)[0]
        cases[function] = cases.get(function, 0) + 1
    lines = [f"{test} ({n} cases)" if n > 1 else test for test, n in cases.items()]
    if not lines:
        lines = ["no test yet (unverified)"]
    if item.attest:
        lines.append(f"and a signed attestation from {item.owner}")
    return lines


def _shown_able_to_fail(item: Item, shown: dict[str, list[RedVariant]]) -> list[str]:
    """One line per red variant (the defect, and the test that seeded it); for a probe item
    without one, a line saying so."""
    lines = [f"{v.defect} ({v.test})" for v in shown.get(item.id, [])]
    if not lines and item.verify == "probe":
        return ["no red-variant test yet"]
    return lines
