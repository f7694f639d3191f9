"""`preflight run`: the release gate."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from preflight.checklist import DEFAULT_PATH
from preflight.cli._args import add_selection
from preflight.errors import PreflightError
from preflight.load import PROFILES
from preflight.progress import Progress
from preflight.scope import verdict_line
from preflight.signing import KEYS_VARIABLE, default_keys, warn_unpinned_harness


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="verify every checklist item against a target; exit 0 ready, 1 not ready, 2 error",
        description=(
            "Load the checklist, bring up (or reach) the target, run the probes in checks/, the "
            "load profile and the drills, decide every item (pass, fail, error, skip, waived, "
            "attested, unverified), apply the gate policy of checklist.yaml and write "
            "record.json, report.html and junit.xml to OUT/<run-id>/ (OUT/latest points at the "
            "newest). The record is signed with the harness run key."
        ),
        epilog=(
            "Exit status: 0 READY (no item blocks by the gate policy), 1 NOT READY, "
            "2 the harness could not run (bad checklist or waivers, target down, probes that do "
            "not collect). Example: preflight run --area security --severity critical,high"
        ),
    )
    p.add_argument(
        "--target",
        default="auto",
        metavar="KIND|FILE",
        help="auto (the default: containers where a Docker engine answers, else native), "
        "native (the bundled system as processes here), "
        "containers (system/deploy's images and compose file on this machine's Docker "
        "engine), or a target file describing a running deployment (docs/targets.md)",
    )
    add_selection(p)
    p.add_argument(
        "--profile", default="smoke", choices=PROFILES, help="load profile (default smoke)"
    )
    p.add_argument(
        "--no-load",
        action="store_true",
        help="skip the load profile (load items stay unverified, saying so); for quick runs",
    )
    p.add_argument(
        "--drills",
        default="all",
        metavar="all|none|NAME[,NAME]",
        help="which drills to run after the load (checks/drills/test_<NAME>.py: they break a "
        "component and restore it); default all. Items only an unselected drill decides are "
        "reported as not selected",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="load-generator processes for the load profile (default: as many as the profile "
        "needs, its generator_processes in loadtests/profiles.yaml: smoke 1, release 2; more "
        "than 1 uses Locust's master/worker mode on this machine; fewer than the profile needs "
        "is refused)",
    )
    p.add_argument(
        "--api-workers", type=int, default=2, help="API worker processes of a native target (2)"
    )
    p.add_argument("--out", type=Path, default=Path("reports"), help="reports folder (reports/)")
    p.add_argument("--checklist", type=Path, default=DEFAULT_PATH, help="checklist.yaml")
    p.add_argument("--checks", type=Path, default=Path("checks"), help="probe folder (checks/)")
    p.add_argument("--waivers", type=Path, default=Path("waivers.yaml"), help="waivers.yaml")
    p.add_argument(
        "--keys",
        type=Path,
        default=default_keys(),
        help=f"public keys per role (default: ${KEYS_VARIABLE}, else signoff/keys.yaml)",
    )
    p.add_argument(
        "--attestations",
        type=Path,
        default=Path("signoff/attestations"),
        help="folder of signed attestations for manual items",
    )
    p.add_argument(
        "--ci-junit",
        type=Path,
        metavar="FILE",
        help="the CI's JUnit XML for this commit (a testsuite property `commit`): decides "
        "DEP-TESTS-GREEN instead of an attestation",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="one progress line per probe (test) instead of one per checklist item",
    )
    p.set_defaults(handler=cmd_run)


def _drills(value: str) -> tuple[str, ...] | None:
    """`all` -> None (every drill), `none` -> (), else the comma-separated names."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if names == ("all",):
        return None
    if names == ("none",):
        return ()
    if not names or {"all", "none"} & set(names):
        raise PreflightError(f"--drills takes all, none or drill names (got {value!r})")
    return names


def cmd_run(args: argparse.Namespace) -> int:
    if args.api_workers < 1:
        raise PreflightError(f"--api-workers must be at least 1 (got {args.api_workers})")
    if args.workers is not None and args.workers < 1:
        raise PreflightError(f"--workers must be at least 1 (got {args.workers})")
    # The run's own modules (targets, Locust's runner, the probe plugin) load only for a run, so
    # the sign-off commands work in an install without them.
    from preflight.load.locust import locust_runner  # noqa: PLC0415
    from preflight.load.runner import no_load_runner  # noqa: PLC0415
    from preflight.run import RunOptions, run  # noqa: PLC0415

    # Before anything starts: the profile's own number of generator processes, or a refusal of
    # fewer than it needs.
    workers = args.workers or 1
    if not args.no_load:
        workers = locust_runner.processes(args.profile, args.workers or 0)

    options = RunOptions(
        checklist_path=args.checklist,
        target=args.target,
        areas=tuple(args.areas) if args.areas else None,
        severities=tuple(args.severities) if args.severities else None,
        profile=args.profile,
        workers=workers,
        api_workers=args.api_workers,
        out=args.out,
        checks_dir=args.checks,
        waivers_path=args.waivers,
        keys_path=args.keys,
        attestations_dir=args.attestations,
        drills=_drills(args.drills),
        ci_junit=args.ci_junit,
        **({"load_runner": no_load_runner} if args.no_load else {}),
    )
    received: list[str] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(received[-1])

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        result = run(options, Progress(verbose=args.verbose))
    except KeyboardInterrupt as stop:
        what = received[-1] if received else "SIGINT"
        where = f", {stop}" if str(stop) and str(stop) != what else ""
        print(
            f"preflight: {what} received{where}; stopped the target, wrote no verdict",
            file=sys.stderr,
        )
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"report  {result.run_dir / 'report.html'}")
    print(f"junit   {result.run_dir / 'junit.xml'}")
    print(f"record  {result.run_dir / 'record.json'}")
    if result.verdict.blocking:
        shown = ", ".join(result.verdict.blocking[:10])
        more = len(result.verdict.blocking) - 10
        print(f"blocking: {shown}" + (f" and {more} more" if more > 0 else ""))
    if result.verdict.warnings:
        print(f"warnings (do not block under this policy): {', '.join(result.verdict.warnings)}")
    warn_unpinned_harness(args.keys)
    print(verdict_line(result.record))
    return result.exit_code
