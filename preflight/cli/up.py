"""`preflight up`: start the bundled chat system and keep it up until Ctrl-C (or, with --check,
verify its edge answers over TLS and stop)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from preflight.targets import Target, TargetInfo


EXIT_OK, EXIT_NOT_READY = 0, 1


class _Stop(Exception):
    pass


def _log_to_stderr(start: float) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.2f}s] {message}", file=sys.stderr, flush=True)

    return log


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 1..65535 (got {value})")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `up`; it sets `handler=` (args -> exit code)."""
    up = sub.add_parser(
        "up",
        help="start the bundled chat system and keep it up until Ctrl-C",
        description=(
            "Start the bundled chat system (PostgreSQL, Redis, API workers, NGINX edge with TLS) "
            "and print its edge URL, CA file and admin key. It stays up until Ctrl-C or SIGTERM, "
            "then stops every process and removes its temp dir. An API worker that exits "
            "unasked (a crash, kill -9) is restarted after a backoff, and each restart is "
            "logged; a worker that keeps exiting (more than 5 restarts a minute), or any other "
            "component that crashes, stops the whole target, with the last lines of its log."
        ),
        epilog=(
            "Example: preflight up --write-target t.yaml   (then, elsewhere: "
            "preflight run --target t.yaml, or pytest checks/ --target t.yaml)"
        ),
    )
    up.add_argument(
        "--target",
        default="auto",
        choices=["auto", "native", "containers"],
        help="how to run it: auto (the default: containers where a Docker engine answers, "
        "else native), native, or containers "
        "(system/deploy on this machine's Docker engine; docs/targets.md)",
    )
    up.add_argument("--workers", type=_positive, default=2, help="API worker processes (2)")
    up.add_argument("--edge-port", type=_port, help="HTTPS port of the edge (a free one)")
    up.add_argument("--http-port", type=_port, help="plain-HTTP port of the edge (a free one)")
    up.add_argument(
        "--write-target",
        type=Path,
        metavar="FILE",
        help="once ready, write a target file (YAML, mode 0600) other processes can use",
    )
    up.add_argument(
        "--check",
        action="store_true",
        help="verify the edge answers over TLS, then stop everything (exit 0 if it does)",
    )
    up.set_defaults(handler=cmd_up)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def cmd_up(args: argparse.Namespace) -> int:
    from preflight.targets import TargetOptions, select_target, write_target_file  # noqa: PLC0415

    t0 = time.monotonic()
    log = _log_to_stderr(t0)
    options = TargetOptions(
        workers=args.workers,
        edge_port=args.edge_port,
        http_port=args.http_port,
        observability=True,
        backups=True,
        log=log,
    )
    selection, target = select_target(args.target, options)
    log(f"target: {selection.kind} ({selection.reason})")
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with target as info:
            elapsed = time.monotonic() - t0
            print(f"preflight: {info.kind} target ready in {elapsed:.2f} s")
            _print_info(info)
            if args.write_target:
                write_target_file(info, args.write_target)
                print(f"  target file {args.write_target}")
            if args.check:
                return _check(info)
            print("Press Ctrl-C to stop.", flush=True)
            return _watch(target)
    except _Stop as stop:
        print(f"preflight: {stop} received; stopped everything", file=sys.stderr)
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.write_target:
            with contextlib.suppress(OSError):
                args.write_target.unlink()


def _print_info(info: TargetInfo) -> None:
    print(f"  edge        {info.edge.url}")
    print(f"  web client  {info.edge.url}/app/")
    if info.edge.http_url:
        print(f"  plain HTTP  {info.edge.http_url}")
    if info.edge.ca_file:
        print(f"  CA file     {info.edge.ca_file}")
    print(f"  admin key   {info.admin_key}")
    if info.stores.postgres_dsn:
        print(f"  postgres    {info.stores.postgres_dsn}")
    if info.stores.redis_url:
        print(f"  redis       {info.stores.redis_url}")
    sys.stdout.flush()


def _watch(target: Target) -> int:
    while True:
        time.sleep(0.5)
        crashed = target.crashed()
        if crashed:
            for child in crashed:
                print(f"preflight: {child.crashed_message()}", file=sys.stderr)
            print("preflight: stopping everything", file=sys.stderr)
            return EXIT_NOT_READY


def _check(info: TargetInfo) -> int:
    """The main job until the checklist runner exists: does the edge answer, over TLS, ready?"""
    url = urlsplit(info.edge.url)
    context = ssl.create_default_context(
        cafile=str(info.edge.ca_file) if info.edge.ca_file else None
    )
    conn = http.client.HTTPSConnection(
        url.hostname or "", url.port or 443, context=context, timeout=10
    )
    try:
        conn.request("GET", "/v1/health/ready")
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        hsts = resp.getheader("Strict-Transport-Security")
        tls = conn.sock.version() if isinstance(conn.sock, ssl.SSLSocket) else "?"
    finally:
        conn.close()
    ok = resp.status == 200 and bool(hsts)
    verdict = "READY" if ok else "NOT READY"
    print(
        f"{verdict} - GET {info.edge.url}/v1/health/ready over {tls}: {resp.status} {body.strip()}"
        f"; HSTS {'present' if hsts else 'MISSING'}"
    )
    return EXIT_OK if ok else EXIT_NOT_READY
