"""`preflight report` (re-render report.html and junit.xml from a record) and `preflight diff`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from preflight.diff import describe, diff_records, selection_difference, summary
from preflight.final_verdict import final_verdict
from preflight.record import load_record, record_path
from preflight.report import write_reports
from preflight.report.hdf import render_hdf
from preflight.report.markdown import render_markdown
from preflight.scope import verdict_line

EXIT_OK, EXIT_REGRESSION = 0, 1
HDF_FILE = "record.hdf.json"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's subcommands; each sets `handler=` (args -> exit code)."""
    report = sub.add_parser(
        "report",
        help="render report.html and junit.xml from a run record",
        description=(
            "Render report.html (self-contained, opens offline) and junit.xml from a run record, "
            "e.g. after a stakeholder signed it. The record is validated against its schema first."
        ),
        epilog="Example: preflight report reports/latest",
    )
    report.add_argument(
        "record", type=Path, metavar="RECORD", help="a record.json or the run directory holding it"
    )
    report.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where to write the reports (default: next to the record)",
    )
    report.add_argument(
        "--format",
        choices=("html", "markdown", "hdf"),
        default="html",
        help="html: write report.html and junit.xml (the default); markdown: print the verdict "
        "and the blocking items as Markdown, for a CI job summary; hdf: write record.hdf.json in "
        "MITRE's Heimdall Data Format, to view beside InSpec results in Heimdall",
    )
    report.set_defaults(handler=cmd_report)

    diff = sub.add_parser(
        "diff",
        help="list the items whose outcome changed between two runs, new failures first",
        description=(
            "Compare two run records: of the items both runs selected, those whose outcome "
            "changed, then items added to or removed from the checklist; a line says which items "
            "only one run selected (they are not compared). "
            "Listed by kind - new failures (now fail or error), other regressions (e.g. pass -> "
            "unverified), changes within one rank (e.g. fail -> error), improvements, added, "
            "removed - one per line, then a summary line. Exits 0 whatever changed, unless "
            "--fail-on-regression is given; 2 when a record cannot be read."
        ),
        epilog="Example: preflight diff reports/20261124T180000Z-9b1e04 reports/latest",
    )
    diff.add_argument("old", type=Path, metavar="OLD", help="the earlier record.json or run dir")
    diff.add_argument("new", type=Path, metavar="NEW", help="the later record.json or run dir")
    diff.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when any item got worse: a new failure or another regression",
    )
    diff.set_defaults(handler=cmd_diff)


def cmd_report(args: argparse.Namespace) -> int:
    source = record_path(args.record)
    record = load_record(source)
    if args.format == "markdown":
        print(render_markdown(record), end="")
        return EXIT_OK
    if args.format == "hdf":
        out = (args.out if args.out is not None else source.parent) / HDF_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(render_hdf(record), indent=1) + "\n")
        print(f"wrote {out}")
        return EXIT_OK
    out_dir = args.out if args.out is not None else source.parent
    for path in write_reports(record, out_dir):
        print(f"wrote {path}")
    print(verdict_line(record))
    print(final_verdict(record).summary())
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    old, new = load_record(args.old), load_record(args.new)
    changes = diff_records(old, new)
    print(selection_difference(old, new).describe(old, new))
    for change in changes:
        print(describe(change))
    print(f"{summary(changes)} (from run {old['run_id']} to run {new['run_id']})")
    worse = any(change.worse for change in changes)
    return EXIT_REGRESSION if args.fail_on_regression and worse else EXIT_OK
