"""A container's output copied into a file of the run, across restarts, for the log probes.

The docker CLI follows the output in a process of its own (`docker logs --follow`), so no engine
connection of this process stays open behind a thread (docker-py's log streams leak their
sockets). A follow ends when its container stops; a drill's kill or stop is followed by a
restart, so the follower starts again, from the moment the last one ended, until the target
leaves."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import threading
from pathlib import Path

RESTART_PAUSE_S = 0.5  # between a follow that ended and the next (the container is down)


class LogFollower:
    """`docker logs --follow` of one container into `path`, again after every restart."""

    def __init__(self, container_id: str, path: Path) -> None:
        self.container_id = container_id
        self.path = path
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(
            target=self._follow, name=f"logs-{container_id[:12]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _follow(self) -> None:
        since: str | None = None
        while not self._stopped.is_set():
            argv = ["docker", "logs", "--follow", *(["--since", since] if since else [])]
            with self._lock:
                if self._stopped.is_set():
                    return
                with self.path.open("ab") as out:
                    self._process = subprocess.Popen(
                        [*argv, self.container_id],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
            self._process.wait()
            since = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
            self._stopped.wait(RESTART_PAUSE_S)

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()
                process.wait()
        self._thread.join(timeout=10)
