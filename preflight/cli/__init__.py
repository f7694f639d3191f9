"""The `preflight` command: its parser and `main`. Each command group is a module of this
package (up, checklist, run, signoff, report) that registers its subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from preflight import __version__
from preflight.cli import checklist, report, run, signoff, up, waive
from preflight.errors import PreflightError

EXIT_OK, EXIT_HARNESS = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preflight",
        description="Executable production-readiness checklists, verified against a real system.",
    )
    parser.add_argument("--version", action="version", version=f"preflight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (
        up.register,
        checklist.register,
        run.register,
        signoff.register,
        waive.register,
        report.register,
    ):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except PreflightError as exc:
        print(f"preflight: error: {exc}", file=sys.stderr)
        return EXIT_HARNESS
    except ModuleNotFoundError as exc:
        # The light install (no extras) signs, verifies and renders; running needs the rest.
        print(
            f"preflight: error: `preflight {args.command}` needs the Python package "
            f'{exc.name}, which this install lacks: pip install "preflight[all]" (the '
            "probes, the load generator, the browser and the chat system)",
            file=sys.stderr,
        )
        return EXIT_HARNESS
    except BrokenPipeError:  # `preflight checklist show | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
