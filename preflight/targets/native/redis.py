"""Redis of the native target: redis.conf in <workdir>/redis (its password in the file, not on
the command line), the server on loopback, and its URL."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from preflight.targets.procs import Child, wait_until
from preflight.targets.servers import redis_conf


class RedisServer:
    """One Redis server; `settings` are extra redis.conf lines (test variants)."""

    def __init__(
        self, workdir: Path, port: int, program: str, settings: Sequence[str], ready_timeout: float
    ) -> None:
        self.dir = workdir / "redis"
        self.logs = workdir / "logs"
        self.port = port
        self.program = program
        self.settings = settings
        self.ready_timeout = ready_timeout
        self.password = secrets.token_urlsafe(24)

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password)}@127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """The URL without credentials (the exporter takes the password apart)."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self, spawn: Callable[[Child], Child]) -> Child:
        """Write redis.conf and start the server; returns once it answers PING."""
        self.dir.mkdir(mode=0o700)
        conf = self.dir / "redis.conf"
        # In a file, not on the command line, so the password is not visible in `ps`.
        conf.write_text(
            redis_conf(
                self.password,
                f"port {self.port}",
                "bind 127.0.0.1",
                f"dir {self.dir}",
                "daemonize no",
                'logfile ""',
                "loglevel notice",  # saves and other events for the central log store
                *self.settings,
            )
        )
        conf.chmod(0o600)
        child = spawn(Child("redis", [self.program, str(conf)], self.logs / "redis.log"))
        wait_until(child, self._pong, self.ready_timeout, "answering PING")
        return child

    def _pong(self) -> bool:
        try:
            client = redis.Redis(
                host="127.0.0.1",
                port=self.port,
                password=self.password,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
            with client:
                return bool(client.ping())
        except redis.RedisError:
            return False
