"""PostgreSQL of the native target, from initdb to an application role: a cluster in
<workdir>/postgres run by the postgres user (when root), on loopback, TCP over TLS only (unless a
test variant says otherwise), with the DSNs of the app role and of the superuser."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

from preflight.errors import TargetUnavailable
from preflight.targets.native.options import NativeTestOptions
from preflight.targets.native.workdir import executable
from preflight.targets.pki import Pki
from preflight.targets.procs import Child, RunAs, wait_until
from preflight.targets.servers import (
    APP_DB,
    APP_ROLE,
    APP_ROLE_SQL,
    POSTGRES_TLS_SETTINGS,
    pg_hba,
    postgres_args,
)

TOOLS = ("initdb", "postgres", "psql", "pg_isready")
INITDB_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30.0


def binaries(pg_bin: Path) -> dict[str, str]:
    """The PostgreSQL programs the target runs, found in `pg_bin` (or how to install them)."""
    return {name: executable(name, pg_bin) for name in TOOLS}


class Postgres:
    """One cluster: initdb runs in the background while the rest of the target starts."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        programs: Mapping[str, str],
        variants: NativeTestOptions,
        ready_timeout: float,
    ) -> None:
        self.dir = workdir / "postgres"
        self.logs = workdir / "logs"
        self.port = port
        self.programs = programs
        self.variants = variants
        self.ready_timeout = ready_timeout
        self.run_as = RunAs.system_user("postgres")
        self.superuser_password = secrets.token_urlsafe(24)
        self.app_password = secrets.token_urlsafe(24)
        self._initdb: subprocess.Popen[bytes] | None = None
        self._tls_settings: tuple[str, ...] = ()

    def dsn(self, ca_cert: Path, *, superuser: bool = False) -> str:
        """The app role's DSN (the superuser's, for the backup job and a restore). With TLS the
        client verifies the server's certificate against the per-run CA (SEC-DB-TLS)."""
        user, password = (
            ("postgres", self.superuser_password) if superuser else (APP_ROLE, self.app_password)
        )
        dsn = f"postgresql://{user}:{quote(password)}@127.0.0.1:{self.port}/{APP_DB}"
        if self.variants.postgres_tls:
            dsn += f"?sslmode=verify-full&sslrootcert={quote(str(ca_cert))}"
        return dsn

    def begin_initdb(self) -> None:
        """Start initdb (with the superuser's password from a file it alone reads)."""
        self.dir.mkdir(mode=0o700)
        self._own(self.dir)
        pwfile = self.dir / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        kwargs: dict[str, object] = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}
        log = (self.logs / "initdb.log").open("ab")
        with log:
            self._initdb = subprocess.Popen(  # type: ignore[call-overload]
                [
                    self.programs["initdb"],
                    "-D",
                    str(self.dir / "data"),
                    "-U",
                    "postgres",
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--data-checksums",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **kwargs,
            )

    def finish_initdb(self) -> None:
        assert self._initdb is not None
        code = self._initdb.wait(timeout=INITDB_TIMEOUT_S)
        (self.dir / "superuser.pw").unlink(missing_ok=True)
        if code != 0:
            log = self.logs / "initdb.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise TargetUnavailable(f"PostgreSQL initdb failed with exit code {code}:\n{tail}")

    def abandon_initdb(self) -> None:
        """Kill an initdb still running: a start that failed early may leave one, and removing
        the dir under it would let it re-create part of the tree afterwards."""
        if self._initdb is not None and self._initdb.poll() is None:
            self._initdb.kill()
            self._initdb.wait(timeout=10)
        self._initdb = None

    def configure(self, pki: Pki) -> None:
        """pg_hba.conf (loopback, one password method, TCP over TLS only) and, with TLS, the
        edge's certificate (its SAN names 127.0.0.1) copied where the postgres user can read it."""
        data = self.dir / "data"
        tls = self.variants.postgres_tls
        owned = [data / "pg_hba.conf"]
        owned[0].write_text(pg_hba(self.variants.postgres_auth_method, tls=tls))
        self._tls_settings = ()
        if tls:
            cert, key = data / "server-chain.pem", data / "server.key"
            shutil.copyfile(pki.server_chain, cert)
            shutil.copyfile(pki.server_key, key)
            key.chmod(0o600)  # PostgreSQL refuses a key file that others can read
            owned += [cert, key]
            self._tls_settings = (
                *POSTGRES_TLS_SETTINGS,
                f"ssl_cert_file={cert}",
                f"ssl_key_file={key}",
            )
        for path in owned:
            self._own(path)

    def start(self, spawn: Callable[[Child, RunAs | None], Child]) -> Child:
        """Start the server; returns once it accepts connections."""
        settings = (*self._tls_settings, *self.variants.postgres_settings)
        child = Child(
            "postgres",
            [
                self.programs["postgres"],
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                *postgres_args(),
                *(arg for setting in settings for arg in ("-c", setting)),
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_connections=off",
            ],
            self.logs / "postgres.log",
            signal.SIGINT,  # "fast" shutdown: roll back open transactions, checkpoint, exit
            STOP_TIMEOUT_S,
        )
        spawn(child, self.run_as)
        wait_until(
            child,
            self._accepting,
            self.ready_timeout,
            "accepting connections",
            interval=0.05,
        )
        return child

    def create_app_role(self) -> None:
        """The application role and database (servers.APP_ROLE_SQL), then the test variant's SQL."""
        result = subprocess.run(
            [
                self.programs["psql"],
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"pw={self.app_password}",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ],
            input=APP_ROLE_SQL + "".join(f"{sql};\n" for sql in self.variants.postgres_sql),
            env={**os.environ, "PGPASSWORD": self.superuser_password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise TargetUnavailable(
                f"PostgreSQL: creating the application role failed: {result.stderr.strip()}"
            )

    def _accepting(self) -> bool:
        pg_isready = self.programs["pg_isready"]
        argv = [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        return subprocess.run(argv, check=False).returncode == 0

    def _own(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)
