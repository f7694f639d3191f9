"""The native target's streaming standby, and the failover drill's hands over the pair.

The standby is a second PostgreSQL server (postgres.Server) on its own port and folder, made
from the primary with `pg_basebackup -R` through the replication slot (servers.STANDBY_SLOT), so
its copy carries the primary_conninfo it streams with; the target counts as started once the
primary shows it streaming. Replication is synchronous while the standby streams: the
deployment's guard (system/deploy/images/postgres/sync-guard.sh) runs beside the pair as the
process postgres-sync-guard (system/docs/operations/replication.md).
`Failover.replication_held` stops the primary's WAL senders for the failover drill, so the
standby is behind when the primary dies.

`Failover` (base.DatabaseFailover) promotes the standby when the primary is lost, and afterwards
puts both servers back in their starting roles: the lost primary is rebuilt as a standby of the
promoted one, a switchover (the promoted one's fast shutdown sends it every WAL record) makes it
the primary again, and the other one is rebuilt as its standby. The same processes (Child) come
back on the same ports, so the target's controls, DSNs and logs keep meaning what they meant.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from preflight.errors import TargetUnavailable
from preflight.polling import until
from preflight.targets.native.postgres import Postgres, Server
from preflight.targets.native.supervisor import Supervisor
from preflight.targets.pki import Pki
from preflight.targets.procs import Child, RunAs
from preflight.targets.servers import HELD_SENDERS, REPLICATION_ROLE, STANDBY_SLOT

STANDBY = "postgres-standby"
GUARD = "postgres-sync-guard"
# The guard the deployment runs beside its pair, run here the same way (its comment says what
# it does): commits wait for a streaming standby, and for none while no standby streams.
SYNC_GUARD = (
    Path(__file__).resolve().parents[3]
    / "system"
    / "deploy"
    / "images"
    / "postgres"
    / "sync-guard.sh"
)
SYNCHRONOUS_WITHIN_S = 15.0
BASE_BACKUP_TIMEOUT_S = 120
DROP_IDLE_SLOT = (
    f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "  # noqa: S608
    f"WHERE slot_name = '{STANDBY_SLOT}' AND NOT active"
)


def base_backup(into: Server, source: Server, primary: Postgres) -> subprocess.Popen[bytes]:
    """Start `pg_basebackup -R` of `source` into `into`'s empty data folder, through a fresh
    replication slot, as the replication role (its password in the environment, which -R
    writes into primary_conninfo with the rest of the connection)."""
    shutil.rmtree(into.data, ignore_errors=True)
    into.dir.mkdir(mode=0o700, exist_ok=True)
    into.own(into.dir)
    conninfo = [
        "host=127.0.0.1",
        f"port={source.port}",
        f"user={REPLICATION_ROLE}",
        f"application_name={into.name}",
    ]
    if primary.variants.postgres_tls:
        shutil.copyfile(source.ca, into.ca)
        into.own(into.ca)
        # No client certificate (the role logs in with its password): libpq looks for one
        # where this names, in the postgres user's own folder, not in a $HOME it cannot read.
        conninfo += [
            "sslmode=verify-full",
            f"sslrootcert={into.ca}",
            f"sslcert={into.dir / 'postgresql.crt'}",
        ]
    source.psql(DROP_IDLE_SLOT, primary.superuser_password)
    return into.popen_as_postgres(
        [
            into.programs["pg_basebackup"],
            "-D",
            str(into.data),
            "-d",
            " ".join(conninfo),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--create-slot",
            f"--slot={STANDBY_SLOT}",
            "--checkpoint=fast",
            # Not synced twice: the standby's server syncs its whole data directory itself
            # before it starts recovery from the copy (it was not shut down cleanly).
            "--no-sync",
            "--no-password",
        ],
        "pg_basebackup",
        env={**os.environ, "PGPASSWORD": primary.replication_password},
    )


def finish_base_backup(backup: subprocess.Popen[bytes], into: Server) -> None:
    code = backup.wait(timeout=BASE_BACKUP_TIMEOUT_S)
    if code != 0:
        raise TargetUnavailable(
            f"PostgreSQL {into.name}: pg_basebackup failed with exit code {code}:\n"
            f"{into.log_tail('pg_basebackup')}"
        )


def wait_streaming(primary: Postgres, source: Server, standby: Server) -> None:
    """Until `source` shows `standby` streaming in pg_stat_replication."""
    sql = (
        "SELECT count(*) FROM pg_stat_replication "  # noqa: S608
        f"WHERE application_name = '{standby.name}' AND state = 'streaming'"
    )

    def streaming() -> bool:
        if standby.child is not None and not standby.child.running():
            raise TargetUnavailable(
                f"PostgreSQL {standby.name} did not start: {standby.child.crashed_message()}"
            )
        return source.psql(sql, primary.superuser_password) == "1"

    if not until(streaming, primary.ready_timeout, interval=0.1):
        raise TargetUnavailable(
            f"PostgreSQL {standby.name} was not streaming from {source.name} within "
            f"{primary.ready_timeout:.0f} s; last lines of its log:\n"
            f"{standby.log_tail(standby.name)}"
        )


def sync_guard(primary: Postgres, standby: Server) -> tuple[Child, dict[str, str]]:
    """The guard's process, and its environment: both servers, the superuser's password file,
    psql on its PATH. It runs as the postgres user, who alone reads that file."""
    child = Child(GUARD, ["/bin/sh", str(SYNC_GUARD)], primary.logs / f"{GUARD}.log")
    password = primary.dir / f"{GUARD}.pw"
    password.write_text(primary.superuser_password + "\n")
    password.chmod(0o600)
    primary.own(password)
    env = {
        "PATH": f"{Path(primary.programs['psql']).parent}:/usr/bin:/bin",
        "POSTGRES_SYNC_SERVERS": f"127.0.0.1:{primary.port} 127.0.0.1:{standby.port}",
        "POSTGRES_PASSWORD_FILE": str(password),
    }
    return child, env


def wait_synchronous(primary: Postgres, server: Server) -> None:
    """Until `server`, a primary, waits for its standby on every commit (the guard set it)."""
    sql = "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"
    if not until(
        lambda: server.psql(sql, primary.superuser_password) != "0",
        SYNCHRONOUS_WITHIN_S,
        interval=0.1,
    ):
        raise TargetUnavailable(
            f"PostgreSQL {server.name} did not replicate synchronously within "
            f"{SYNCHRONOUS_WITHIN_S:.0f} s of its standby streaming; the end of the guard's "
            f"log:\n{server.log_tail(GUARD)}"
        )


class Standby(Server):
    """The standby of `primary`, named postgres-standby."""

    def __init__(self, primary: Postgres, port: int) -> None:
        super().__init__(
            primary.dir.parent,
            port,
            primary.programs,
            primary.variants,
            primary.ready_timeout,
            name=STANDBY,
        )
        self.primary = primary
        self._backup: subprocess.Popen[bytes] | None = None

    def begin(self) -> None:
        """Start its base backup from the running primary (in the background)."""
        self._backup = base_backup(self, self.primary, self.primary)

    def finish(self, spawn: Callable[[Child, RunAs | None], Child], pki: Pki) -> Child:
        """Once the base backup is done: its own TLS files, its server, and wait until the
        primary shows it streaming."""
        assert self._backup is not None
        finish_base_backup(self._backup, self)
        self._backup = None
        self.configure(pki)
        child = self.start(spawn)
        wait_streaming(self.primary, self.primary, self)
        return child

    def abandon(self) -> None:
        """Kill a base backup still running (a start that failed half-way)."""
        if self._backup is not None and self._backup.poll() is None:
            self._backup.kill()
            self._backup.wait(timeout=10)
        self._backup = None


class Failover:
    """The failover drill's hands over the native target's primary and standby
    (base.DatabaseFailover)."""

    def __init__(
        self,
        primary: Postgres,
        standby: Standby,
        supervisor: Supervisor,
        *,
        synchronous: bool = True,
    ) -> None:
        self.primary = primary
        self.standby = standby
        self.supervisor = supervisor
        self.synchronous = synchronous  # a guard runs: the rejoined pair waits until it is

    @contextlib.contextmanager
    def replication_held(self) -> Iterator[None]:
        """The WAL senders of the primary's standbys (those that report a replayed position,
        not a base backup's stream) stopped (SIGSTOP) for the block. A stopped process cannot
        see its postmaster die: if the primary was killed meanwhile they are killed too, or they
        would keep its shared memory attached and the killed primary could not start again."""
        pids = [
            int(pid)
            for pid in self.primary.psql(HELD_SENDERS, self.primary.superuser_password).split()
        ]
        if not pids:
            raise TargetUnavailable(
                f"PostgreSQL {self.primary.name} has no WAL sender to hold: no standby streams"
            )
        try:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            child = self.primary.child
            alive = child is not None and child.running()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT if alive else signal.SIGKILL)

    def promote(self) -> None:
        """`pg_promote()` on the standby; returns once it accepts writes."""
        self._promote(self.standby)

    def rejoin(self) -> None:
        """Back to the starting roles: postgres the primary, postgres-standby streaming from it.
        Without a promotion since the start, the primary is only started again (if it is down)."""
        primary, standby = self.primary, self.standby
        if self._in_recovery(standby):
            self._start(primary)
            wait_streaming(primary, primary, standby)
        else:
            self._stop(primary)  # whatever is left of it: the promoted standby has the data now
            self._rebuild(primary, source=standby)
            self._stop(standby)  # a fast shutdown sends its last WAL to the new standby first
            self._promote(primary)
            self._rebuild(standby, source=primary)
        if self.synchronous:
            wait_synchronous(primary, primary)

    # -- steps -------------------------------------------------------------------------------

    def _promote(self, server: Server) -> None:
        done = server.psql(
            "SELECT pg_promote(wait => true, wait_seconds => 30)",
            self.primary.superuser_password,
        )
        if done != "t":
            raise TargetUnavailable(f"PostgreSQL {server.name} was not promoted within 30 s")

    def _in_recovery(self, server: Server) -> bool:
        if server.child is None or not server.child.running():
            return False
        return server.psql("SELECT pg_is_in_recovery()", self.primary.superuser_password) == "t"

    def _stop(self, server: Server) -> None:
        if server.child is not None:
            with self.supervisor.lock(server.name):
                server.child.stop()

    def _start(self, server: Server) -> None:
        assert server.child is not None
        self.supervisor.start_again(server.child)
        server.wait_accepting()

    def _rebuild(self, server: Server, source: Server) -> None:
        """`server` made again as a standby of `source`, started, streaming."""
        finish_base_backup(base_backup(server, source, self.primary), server)
        self._start(server)
        wait_streaming(self.primary, source, server)
