"""A local stand-in for Sentry's ingestion endpoint, run by the native and containers targets
beside the system they start (as the local webhook stands in for pager and chat in the alert
drill): on loopback next to the native target's workers, on this machine's address on the API
containers' network next to the containers target's.

It speaks the part of Sentry's envelope protocol an SDK uses to report errors:
``POST /api/<project_id>/envelope/`` with the DSN's public key in ``X-Sentry-Auth`` (or the
``sentry_key`` query parameter), a body compressed as ``Content-Encoding`` says (gzip, deflate,
br or none), and an envelope of newline-separated JSON: the envelope header, then per item its
header (``type``, optional ``length`` in bytes) and payload. Each item of type ``event`` is
appended as one JSON line to the events file; other items (sessions, client reports) are
accepted and dropped. The API workers get ``CHATSDK_SENTRY_DSN`` pointing here, and
MON-ERROR-TRACKING reads the file (``TargetInfo.error_events``).

    python -m preflight.targets.errortracker --port 9000 --events events.jsonl --key KEY

Pointing the workers at a real Sentry instead is a matter of their CHATSDK_SENTRY_DSN.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib
import json
import os
import secrets
import signal
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from preflight.jsonlines import json_records
from preflight.targets.procs import Child, free_port, wait_until

PROJECT_ID = "1"
MAX_BODY = 20 * 1024 * 1024  # Sentry's own limit for an envelope (compressed: less)
EVENTS = web.AppKey("events", Path)
PROJECT = web.AppKey("project_id", str)
KEY = web.AppKey("key", str)


def _brotli() -> Any:
    # sentry-sdk compresses with br only where brotli is importable, and so can this process.
    try:
        return importlib.import_module("brotli")
    except ImportError:
        return None


BROTLI = _brotli()


class EnvelopeError(ValueError):
    """A body that is not a Sentry envelope; the message says what is wrong."""


def decode_body(body: bytes, encoding: str) -> bytes:
    """The body as the SDK serialised it, undoing its Content-Encoding."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "br" and BROTLI is not None:
            return bytes(BROTLI.decompress(body))
    except (OSError, EOFError, zlib.error) as exc:
        raise EnvelopeError(f"the body is not valid {encoding}: {exc}") from None
    except Exception as exc:  # brotli.error is not an OSError
        raise EnvelopeError(f"the body is not valid {encoding}: {exc}") from None
    raise EnvelopeError(f"Content-Encoding {encoding!r} is not supported")


def _json_line(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(line) if line.strip() else {}
    except ValueError as exc:
        raise EnvelopeError(f"the {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EnvelopeError(f"the {what} must be a JSON object")
    return value


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """The envelope header and each item's (header, payload)."""
    first, _, rest = data.partition(b"\n")
    header = _json_line(first, "envelope header")
    items: list[tuple[dict[str, Any], bytes]] = []
    pos = 0
    while pos < len(rest):
        end = rest.find(b"\n", pos)
        end = len(rest) if end < 0 else end
        line, pos = rest[pos:end], end + 1
        if not line.strip():
            continue  # the optional newline after the last payload
        item = _json_line(line, "item header")
        length = item.get("length")
        if length is None:  # the payload runs to the end of its line
            end = rest.find(b"\n", pos)
            end = len(rest) if end < 0 else end
            payload, pos = rest[pos:end], end + 1
        else:
            if not isinstance(length, int) or length < 0:
                raise EnvelopeError(f"item length must be a non-negative integer (got {length!r})")
            payload = rest[pos : pos + length]
            if len(payload) < length:
                raise EnvelopeError(f"an item declares {length} bytes, {len(payload)} follow")
            pos += length
            if rest[pos : pos + 1] == b"\n":
                pos += 1
        items.append((item, payload))
    return header, items


def events_of(data: bytes) -> list[dict[str, Any]]:
    """The events (items of type `event`) of an envelope."""
    _, items = parse_envelope(data)
    return [
        _json_line(payload, "event payload")
        for item, payload in items
        if item.get("type") == "event"
    ]


def sentry_key(request: web.Request) -> str:
    auth = request.headers.get("X-Sentry-Auth", "")
    if auth.lower().startswith("sentry "):
        for part in auth[len("sentry ") :].split(","):
            name, _, value = part.strip().partition("=")
            if name == "sentry_key":
                return value
    return request.query.get("sentry_key", "")


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event the stand-in received, oldest first (a missing file: none yet)."""
    return [event for _, event in json_records([path])]


async def envelope(request: web.Request) -> web.Response:
    app = request.app
    if request.match_info["project_id"] != app[PROJECT]:
        return web.json_response({"detail": "unknown project"}, status=404)
    if not secrets.compare_digest(sentry_key(request), app[KEY]):
        return web.json_response({"detail": "invalid or missing sentry_key"}, status=401)
    try:
        data = decode_body(await request.read(), request.headers.get("Content-Encoding", ""))
        events = events_of(data)
    except EnvelopeError as exc:
        return web.json_response({"detail": str(exc)}, status=400)
    with app[EVENTS].open("a", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    ids = [str(e.get("event_id", "")) for e in events]
    return web.json_response({"id": ids[0] if ids else None})


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(events: Path, key: str, project_id: str = PROJECT_ID) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[EVENTS] = events
    app[KEY] = key
    app[PROJECT] = project_id
    app.router.add_post("/api/{project_id}/envelope/", envelope)
    app.router.add_get("/health", health)
    return app


async def serve(host: str, port: int, events: Path, key: str, project_id: str) -> None:
    # The body is decoded here, by Content-Encoding, exactly as the protocol says.
    runner = web.AppRunner(make_app(events, key, project_id), auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"error tracker stand-in on {host}:{port}, events to {events}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preflight.targets.errortracker")
    parser.add_argument("--host", default="127.0.0.1", help="the one address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=Path, required=True, help="JSON lines, one per event")
    parser.add_argument("--key", required=True, help="the DSN's public key")
    parser.add_argument("--project-id", default=PROJECT_ID)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.events, args.key, args.project_id))
    return 0


# -- next to a target ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorTracker:
    dsn: str  # what the API workers get as CHATSDK_SENTRY_DSN
    events: Path
    url: str
    child: Child

    def wait_ready(self, timeout: float) -> None:
        wait_until(self.child, lambda: _healthy(f"{self.url}/health"), timeout, "ready")


def _healthy(url: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # this machine's own
    try:
        with direct.open(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_error_tracker(
    workdir: Path,
    spawn: Callable[[Child, Mapping[str, str]], Child],
    host: str = "127.0.0.1",
) -> ErrorTracker:
    """Start the stand-in as a child `errortracker` listening on `host` (one address of this
    machine, where the workers reach it); `wait_ready` waits until it answers (the launcher
    starts the rest meanwhile)."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    workdir.mkdir(exist_ok=True)
    port, key = free_port(host), secrets.token_hex(16)
    events = workdir / "events.jsonl"
    events.touch()
    child = spawn(
        Child(
            "errortracker",
            [
                sys.executable,
                "-m",
                "preflight.targets.errortracker",
                "--host",
                host,
                "--port",
                str(port),
                "--events",
                str(events),
                "--key",
                key,
            ],
            workdir / "errortracker.log",
        ),
        env,
    )
    dsn = f"http://{key}@{host}:{port}/{PROJECT_ID}"
    return ErrorTracker(dsn, events, f"http://{host}:{port}", child)


if __name__ == "__main__":
    sys.exit(main())
