"""The run's time series, written where the stats are whole (the master, or the only process):
every `interval` seconds one JSON line with the users running, the WebSockets held, and per
request type the requests, failures and the response-time histogram of that interval (Locust's
rounded buckets). Summing lines gives exact percentiles over any window, e.g. full scale only.

Workers add their open-socket count to the reports they send the master anyway.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

import gevent
from chat import OPEN_SOCKETS
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

SOCKETS_KEY = "preflight_open_sockets"


class Recorder:
    def __init__(self, environment: Environment, path: Path, interval: float) -> None:
        self.environment = environment
        self.interval = interval
        self.file: TextIO = path.open("a", buffering=1)
        self.started = time.time()
        self.previous: dict[str, tuple[int, int, dict[int, int]]] = {}
        self.worker_sockets: dict[str, int] = {}
        self.closed = False
        environment.events.worker_report.add_listener(self._on_worker_report)
        self.greenlet = gevent.spawn(self._loop)

    def _on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        if SOCKETS_KEY in data:
            self.worker_sockets[client_id] = int(data[SOCKETS_KEY])

    def sockets(self) -> int:
        if isinstance(self.environment.runner, MasterRunner):
            live = set(self.environment.runner.clients.keys())
            return sum(n for client, n in self.worker_sockets.items() if client in live)
        return OPEN_SOCKETS[0]

    def _loop(self) -> None:
        while not self.closed:
            gevent.sleep(self.interval)
            self.snapshot()

    def snapshot(self, final: bool = False) -> None:
        if self.file.closed:
            return
        runner = self.environment.runner
        entries: dict[str, Any] = {}
        for (name, method), entry in list(self.environment.stats.entries.items()):
            key = f"{method} {name}"
            n, failures, hist = self.previous.get(key, (0, 0, {}))
            now_hist = dict(entry.response_times)
            delta = {t: c - hist.get(t, 0) for t, c in now_hist.items() if c != hist.get(t, 0)}
            dn, dfail = entry.num_requests - n, entry.num_failures - failures
            self.previous[key] = (entry.num_requests, entry.num_failures, now_hist)
            if dn or dfail:
                entries[key] = {
                    "type": method,
                    "name": name,
                    "requests": dn,
                    "failures": dfail,
                    "hist": {str(t): c for t, c in sorted(delta.items())},
                }
        errors = {
            f"{e.method} {e.name}": {"error": str(e.error)[:300], "occurrences": e.occurrences}
            for e in self.environment.stats.errors.values()
        }
        line = {
            "t": round(time.time(), 3),
            "elapsed_s": round(time.time() - self.started, 3),
            "users": runner.user_count if runner is not None else 0,
            "sockets": self.sockets(),
            "cpu_warning": bool(runner and runner.cpu_warning_emitted),
            "entries": entries,
            "final": final,
        }
        if final:
            line["errors"] = errors
        self.file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.greenlet.kill(block=False)
        self.snapshot(final=True)
        self.file.close()


def attach(environment: Environment, path: str, interval: float) -> Recorder | None:
    """Record on the master or the only process; a worker only reports its sockets."""
    if isinstance(environment.runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            data[SOCKETS_KEY] = OPEN_SOCKETS[0]

        environment.events.report_to_master.add_listener(report)
        return None
    if not path:
        return None
    recorder = Recorder(environment, Path(path), interval)
    environment.events.test_stop.add_listener(lambda **_kw: recorder.snapshot())
    environment.events.quitting.add_listener(lambda **_kw: recorder.close())
    return recorder
