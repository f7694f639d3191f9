"""Parser pieces shared by the command modules of `preflight`."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable

from preflight.checklist import AREAS

SEVERITIES = ("critical", "high", "medium", "low")


def choices(allowed: tuple[str, ...], what: str) -> type[argparse.Action]:
    """A repeatable, comma-separated option whose every value must be one of `allowed`; an
    unknown value is refused naming the nearest allowed one."""

    class Collect(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: object,
            option_string: str | None = None,
        ) -> None:
            chosen = list(getattr(namespace, self.dest) or [])
            for value in str(values).split(","):
                if value not in allowed:
                    near = difflib.get_close_matches(value, allowed, n=1)
                    hint = f"; did you mean {near[0]}?" if near else ""
                    parser.error(
                        f"{option_string}: unknown {what} {value!r}{hint} "
                        f"(one of: {', '.join(allowed)})"
                    )
                chosen.append(value)
            setattr(namespace, self.dest, chosen)

    return Collect


def command_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    dest: str,
    handler: Callable[[argparse.Namespace], int] | None = None,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add command `name`, whose required ACTION (stored in `dest`) is one of the subparsers
    returned; `handler`, when given, handles every action of the group."""
    group = sub.add_parser(name, help=help, description=description)
    if handler is not None:
        group.set_defaults(handler=handler)
    return group.add_subparsers(dest=dest, required=True, metavar="ACTION")


def add_selection(parser: argparse.ArgumentParser) -> None:
    """--area and --severity, each a repeatable comma-separated list (args.areas,
    args.severities; None when not given)."""
    parser.add_argument(
        "--area",
        dest="areas",
        action=choices(AREAS, "area"),
        metavar="AREA[,AREA]",
        help=f"only items of these areas (repeatable); one of: {', '.join(AREAS)}",
    )
    parser.add_argument(
        "--severity",
        dest="severities",
        action=choices(SEVERITIES, "severity"),
        metavar="SEV[,SEV]",
        help="only items of these severities (repeatable): critical, high, medium, low",
    )
