"""A throwaway PostgreSQL 15 and redis-server for the chatsdk tests (no mocks, no Docker)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import pytest
import redis
from aiohttp import web
from chatsdk.app import create_app
from chatsdk.server import RunningServer, running
from chatsdk.settings import Settings

from preflight.targets.procs import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
APP_ROLE = "chatsdk"
START_TIMEOUT = 15.0

Scenario = Callable[[RunningServer, aiohttp.ClientSession], Awaitable[Any]]
RunApp = Callable[..., Any]


def _as_postgres() -> dict[str, Any]:
    # PostgreSQL refuses to run as root; drop to the postgres system user when we are root.
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _stop(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class PostgresServer:
    base: Path
    port: int
    app_password: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    def start(self) -> None:
        """initdb, launch, and create the app role."""
        self.init()
        self.launch()
        self.psql(
            f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{self.app_password}' "
            "NOSUPERUSER NOCREATEDB NOCREATEROLE"
        )

    def init(self) -> None:
        data = self.base / "data"
        pwfile = self.base / "pwfile"
        pwfile.write_text(secrets.token_hex(16) + "\n")
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            for path in (self.base, pwfile, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=60,
            **_as_postgres(),
        )

    def launch(self) -> None:
        data = self.base / "data"
        with (self.base / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(data),
                    "-k",
                    str(self.socket_dir),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                **_as_postgres(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.psql("SELECT 1", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL did not start: {(self.base / 'postgres.log').read_text()}"
                )
            time.sleep(0.1)

    def psql(
        self, sql: str, database: str = "postgres", *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atqc",
                sql,
            ],
            check=check,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def create_database(self) -> str:
        """A new database owned by the (non-superuser) app role; returns its URL."""
        name = f"t_{secrets.token_hex(6)}"
        self.psql(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
        return f"postgresql://{APP_ROLE}:{self.app_password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)  # SIGINT is PostgreSQL's fast shutdown
            self.process = None


@dataclass
class RedisServer:
    base: Path
    port: int
    password: str
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.base),
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                self.password,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(
            port=self.port, password=self.password, socket_timeout=1, socket_connect_timeout=1
        )
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGTERM)
            self.process = None


class _Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Server)


def _running(prefix: str, make: Callable[[Path], _S]) -> Iterator[_S]:
    """The server `make` builds in a new temp dir, started; stopped and its dir removed after.

    Not pytest's tmp_path: the postgres user must be able to traverse every parent.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    server = make(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _postgres(base: Path) -> PostgresServer:
    return PostgresServer(base=base, port=free_port(), app_password=secrets.token_hex(16))


def _redis(base: Path) -> RedisServer:
    return RedisServer(base=base, port=free_port(), password=secrets.token_hex(16))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    yield from _running("chatsdk-pg-", _postgres)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _running("chatsdk-redis-", _redis)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, for tests that stop and restart it."""
    yield from _running("chatsdk-pg-", _postgres)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, for tests that stop and restart it."""
    yield from _running("chatsdk-redis-", _redis)


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    return postgres.create_database()


def make_env(database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "CHATSDK_DATABASE_URL": database_url,
        "CHATSDK_REDIS_URL": redis_url,
        "CHATSDK_ADMIN_KEY": "a" * 40,
        "CHATSDK_JWT_SECRET": "j" * 40,
        "CHATSDK_HOST": "127.0.0.1",
        "CHATSDK_PORT": "0",
        "CHATSDK_DRAIN_DELAY": "0",
        "CHATSDK_SHUTDOWN_TIMEOUT": "2",
    }
    env.update({f"CHATSDK_{key.upper()}": value for key, value in overrides.items()})
    return env


@pytest.fixture
def env(database_url: str, redis_server: RedisServer) -> dict[str, str]:
    """CHATSDK_* variables for a fresh database and the session's Redis."""
    return make_env(database_url, redis_server.url)


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


async def wait_for_status(
    client: aiohttp.ClientSession, path: str, status: int, within: float = 10.0
) -> dict[str, Any]:
    """Poll `path` until it answers `status`; return the JSON body of that answer."""
    __tracebackhide__ = True
    deadline = time.monotonic() + within
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        async with client.get(path) as response:
            last = (response.status, await response.json())
        if last[0] == status:
            body: dict[str, Any] = last[1]
            return body
        await asyncio.sleep(0.1)
    pytest.fail(f"GET {path} must answer {status} within {within} s (last got {last})")


@pytest.fixture
def run_app() -> RunApp:
    """Run `scenario(server, client)` against a real app on a free port; return its result."""

    def run(
        settings: Settings,
        scenario: Scenario,
        *,
        ready: bool = True,
        extra_routes: Sequence[web.AbstractRouteDef] = (),
    ) -> Any:
        async def main() -> Any:
            app = create_app(settings)
            app.router.add_routes(extra_routes)
            async with (
                running(settings, app) as server,
                aiohttp.ClientSession(
                    base_url=server.url, timeout=aiohttp.ClientTimeout(total=10)
                ) as client,
            ):
                if ready:
                    await wait_for_status(client, "/v1/health/ready", 200)
                return await scenario(server, client)

        return asyncio.run(main())

    return run


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture
def env_for() -> Callable[..., dict[str, str]]:
    """`env_for(database_url, redis_url, **overrides)` -> CHATSDK_* variables."""
    return make_env


@pytest.fixture
def wait_status() -> Callable[..., Awaitable[dict[str, Any]]]:
    """`await wait_status(client, path, status, within=10.0)` -> the JSON body once it matches."""
    return wait_for_status
