"""The central log store (rsyslog, system/deploy/logstore) as the native and containers targets
run it, and how both read it: the store keeps every event it receives as one JSON line of
events.jsonl (store.conf's template), which `EventFile` searches. The native target runs the
store and the shipper of PostgreSQL's and Redis's log files as processes of this machine
(`start_native`); the containers target runs the compose file's `logstore` and `log-shipper`
services and reads the file in the store's volume (containers/logstore.py)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from preflight.errors import TargetUnavailable
from preflight.targets.base import StoredEvent
from preflight.targets.procs import Child, wait_until

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "system" / "deploy" / "logstore"
STORE_CONF = CONFIG_DIR / "store.conf"
SHIPPER_CONF = CONFIG_DIR / "shipper.conf"
EVENTS = "events.jsonl"
STORE, SHIPPER = "logstore", "log-shipper"  # the components' names in the target


def parse_events(text: str) -> list[StoredEvent]:
    """The events of an events.jsonl text (lines that are not the store's records are left
    out: a line still being written)."""
    events = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        try:
            received = dt.datetime.fromisoformat(str(record.get("received"))).timestamp()
        except ValueError:
            continue
        events.append(
            StoredEvent(
                app=str(record.get("app", "")),
                source=str(record.get("source", "")),
                input=str(record.get("input", "")),
                received=received,
                message=str(record.get("msg", "")).strip(),
            )
        )
    return events


@dataclass(frozen=True)
class EventFile:
    """A central log store read as its events.jsonl text (base.LogStore): `read` returns the
    whole file (from this machine's disk, or from the store's container)."""

    address: str
    read: Callable[[], str]

    def search(self, text: str) -> Sequence[StoredEvent]:
        return [e for e in parse_events(self.read()) if text in e.message]


def rsyslogd() -> str:
    found = shutil.which("rsyslogd", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise TargetUnavailable(
            "rsyslogd not found: the central log store runs on Debian's rsyslog; install it "
            "with `apt-get install rsyslog` (or run `make run`, which does)"
        )
    return found


def rsyslog_child(name: str, conf: Path, log: Path) -> Child:
    """rsyslogd in the foreground with `conf` and no pid file."""
    return Child(name, [rsyslogd(), "-n", "-iNONE", "-f", str(conf)], log)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class NativeLogStore:
    """The store's port on loopback and its events file (as base.LogStore via `store`)."""

    port: int
    events: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def store(self) -> EventFile:
        return EventFile(self.address, partial(read_events, self.events))


def read_events(path: Path) -> str:
    """The store's events file as text (empty before its first event)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def start_native(
    workdir: Path,
    port: int,
    *,
    spawn: Callable[[Child, Mapping[str, str]], Child],
    logs: Path,
    shipped: Mapping[str, Path],
    ready_timeout: float,
) -> NativeLogStore:
    """Start the store on loopback's `port` and the shipper of the `shipped` log files
    ("postgres", "redis" -> the file that component writes); returns once the store accepts
    connections."""
    store_dir, ship_dir = workdir / STORE, workdir / SHIPPER
    store_dir.mkdir(mode=0o700)
    ship_dir.mkdir(mode=0o700)
    store = spawn(
        rsyslog_child(STORE, STORE_CONF, logs / f"{STORE}.log"),
        {
            "LOGSTORE_DIR": str(store_dir),
            "LOGSTORE_PORT": str(port),
            "LOGSTORE_ADDRESS": "127.0.0.1",
        },
    )
    wait_until(store, lambda: _accepts(port), ready_timeout, "accepting connections")
    for path in shipped.values():
        path.touch()  # imfile follows a file from its start
    spawn(
        rsyslog_child(SHIPPER, SHIPPER_CONF, logs / f"{SHIPPER}.log"),
        {
            "LOGSHIP_DIR": str(ship_dir),
            "LOGSHIP_STORE_HOST": "127.0.0.1",
            "LOGSHIP_STORE_PORT": str(port),
            **{f"LOGSHIP_{name.upper()}_LOG": str(path) for name, path in shipped.items()},
        },
    )
    return NativeLogStore(port, store_dir / EVENTS)
