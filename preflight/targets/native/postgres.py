"""PostgreSQL of the native target, from initdb to an application role: a cluster in
<workdir>/postgres run by the postgres user (when root), on loopback, TCP over TLS only (unless a
test variant says otherwise), with the DSNs of the app role and of the superuser. Its streaming
standby (standby.py) is a second server of the same kind; both are `Server`s."""

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
    REPLICATION_ROLE_SQL,
    pg_hba,
    postgres_args,
)

TOOLS = ("initdb", "postgres", "psql", "pg_isready", "pg_basebackup")
INITDB_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30.0


def binaries(pg_bin: Path) -> dict[str, str]:
    """The PostgreSQL programs the target runs, found in `pg_bin` (or how to install them)."""
    return {name: executable(name, pg_bin) for name in TOOLS}


class Server:
    """One PostgreSQL server of the target: its folder <workdir>/<name> (data in data/, its Unix
    socket, its copy of the CA), its port on loopback, its TLS files, its log logs/<name>.log."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        programs: Mapping[str, str],
        variants: NativeTestOptions,
        ready_timeout: float,
        *,
        name: str,
    ) -> None:
        self.name = name
        self.dir = workdir / name
        self.data = self.dir / "data"
        self.logs = workdir / "logs"
        self.port = port
        self.programs = programs
        self.variants = variants
        self.ready_timeout = ready_timeout
        self.run_as = RunAs.system_user("postgres")
        self.child: Child | None = None
        self._tls_settings: tuple[str, ...] = ()

    def configure(self, pki: Pki) -> None:
        """pg_hba.conf (loopback, one password method, TCP over TLS only) and, with TLS, the
        edge's certificate (its SAN names 127.0.0.1) copied where the postgres user can read it,
        and the CA, which a standby's walreceiver verifies its primary with."""
        tls = self.variants.postgres_tls
        owned = [self.data / "pg_hba.conf"]
        owned[0].write_text(pg_hba(self.variants.postgres_auth_method, tls=tls))
        self._tls_settings = ()
        if tls:
            cert, key, ca = self.data / "server-chain.pem", self.data / "server.key", self.ca
            shutil.copyfile(pki.server_chain, cert)
            shutil.copyfile(pki.server_key, key)
            shutil.copyfile(pki.ca_cert, ca)
            key.chmod(0o600)  # PostgreSQL refuses a key file that others can read
            owned += [cert, key, ca]
            self._tls_settings = (
                *POSTGRES_TLS_SETTINGS,
                f"ssl_cert_file={cert}",
                f"ssl_key_file={key}",
            )
        for path in owned:
            self.own(path)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def start(self, spawn: Callable[[Child, RunAs | None], Child]) -> Child:
        """Start the server; returns once it accepts connections."""
        settings = (*self._tls_settings, *self.variants.postgres_settings)
        child = Child(
            self.name,
            [
                self.programs["postgres"],
                "-D",
                str(self.data),
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
            self.logs / f"{self.name}.log",
            signal.SIGINT,  # "fast" shutdown: roll back open transactions, checkpoint, exit
            STOP_TIMEOUT_S,
        )
        self.child = spawn(child, self.run_as)
        self.wait_accepting()
        return child

    def wait_accepting(self) -> None:
        assert self.child is not None
        wait_until(
            self.child,
            self._accepting,
            self.ready_timeout,
            "accepting connections",
            interval=0.05,
        )

    def psql(self, sql: str, password: str, *, database: str = "postgres", **variables: str) -> str:
        """Run `sql` as the superuser (its password given) with psql `variables`; its output
        (unaligned, tuples only), or TargetUnavailable with psql's error."""
        argv = [self.programs["psql"], "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        for name, value in variables.items():
            argv += ["-v", f"{name}={value}"]
        argv += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database]
        result = subprocess.run(
            argv,
            input=sql,
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise TargetUnavailable(f"PostgreSQL {self.name}: psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _accepting(self) -> bool:
        pg_isready = self.programs["pg_isready"]
        argv = [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        return subprocess.run(argv, check=False).returncode == 0

    def own(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def popen_as_postgres(
        self, argv: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A tool run as the postgres user (when root) in the background, its output in
        logs/<log_name>.log (initdb, pg_basebackup)."""
        kwargs: dict[str, object] = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}
        with (self.logs / f"{log_name}.log").open("ab") as log:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                **kwargs,
            )

    def log_tail(self, log_name: str) -> str:
        log = self.logs / f"{log_name}.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-15:])


class Postgres(Server):
    """The primary: initdb runs in the background while the rest of the target starts."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        programs: Mapping[str, str],
        variants: NativeTestOptions,
        ready_timeout: float,
    ) -> None:
        super().__init__(workdir, port, programs, variants, ready_timeout, name="postgres")
        self.superuser_password = secrets.token_urlsafe(24)
        self.app_password = secrets.token_urlsafe(24)
        self.replication_password = secrets.token_urlsafe(24)
        self._initdb: subprocess.Popen[bytes] | None = None

    def dsn(self, ca_cert: Path, *, superuser: bool = False) -> str:
        """The app role's DSN (the superuser's, for the backup job and a restore). With TLS the
        client verifies the server's certificate against the per-run CA (SEC-DB-TLS)."""
        return self.dsn_of((self,), ca_cert, superuser=superuser)

    def dsn_of(self, servers: tuple[Server, ...], ca_cert: Path, *, superuser: bool = False) -> str:
        """A DSN naming `servers` (libpq's multi-host form when there are several: a client
        tries them in order and takes the one that accepts writes, `target_session_attrs`)."""
        user, password = (
            ("postgres", self.superuser_password) if superuser else (APP_ROLE, self.app_password)
        )
        hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        query = []
        if self.variants.postgres_tls:
            query += ["sslmode=verify-full", f"sslrootcert={quote(str(ca_cert))}"]
        if len(servers) > 1:
            query.append("target_session_attrs=read-write")
        dsn = f"postgresql://{user}:{quote(password)}@{hosts}/{APP_DB}"
        return dsn + ("?" + "&".join(query) if query else "")

    def begin_initdb(self) -> None:
        """Start initdb (with the superuser's password from a file it alone reads)."""
        self.dir.mkdir(mode=0o700)
        self.own(self.dir)
        pwfile = self.dir / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self.own(pwfile)
        self._initdb = self.popen_as_postgres(
            [
                self.programs["initdb"],
                "-D",
                str(self.data),
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
            "initdb",
        )

    def finish_initdb(self) -> None:
        assert self._initdb is not None
        code = self._initdb.wait(timeout=INITDB_TIMEOUT_S)
        (self.dir / "superuser.pw").unlink(missing_ok=True)
        if code != 0:
            raise TargetUnavailable(
                f"PostgreSQL initdb failed with exit code {code}:\n{self.log_tail('initdb')}"
            )

    def abandon_initdb(self) -> None:
        """Kill an initdb still running: a start that failed early may leave one, and removing
        the dir under it would let it re-create part of the tree afterwards."""
        if self._initdb is not None and self._initdb.poll() is None:
            self._initdb.kill()
            self._initdb.wait(timeout=10)
        self._initdb = None

    def create_app_role(self) -> None:
        """The replication role (servers.REPLICATION_ROLE_SQL), the application role and database
        (servers.APP_ROLE_SQL), then the test variant's SQL."""
        try:
            self.psql(
                REPLICATION_ROLE_SQL
                + APP_ROLE_SQL
                + "".join(f"{sql};\n" for sql in self.variants.postgres_sql),
                self.superuser_password,
                pw=self.app_password,
                rpw=self.replication_password,
            )
        except TargetUnavailable as exc:
            raise TargetUnavailable(
                f"PostgreSQL: creating the application role failed: {exc}"
            ) from exc
