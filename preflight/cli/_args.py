"""Parser pieces shared by the command modules of `preflight`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
