"""The failover drill's hands over the containers target's PostgreSQL pair (base.DatabaseFailover):
the compose file's `postgres` and `postgres-standby` containers, both of the postgres image.

`promote()` first fences the lost primary: `docker stop` of its container, which the engine's
`unless-stopped` policy then leaves down (that policy restarts a crashed container on its old
data, a second primary beside the promoted one; replication.md's first failover step). Then
`pg_promote(wait => true)` on the standby, through `docker exec` psql as the superuser (its
password read from the secret file inside the container); it returns once the standby accepts
writes.

`rejoin()` puts both back in their starting roles the way an operator does it with what the image
ships: the image's `rejoin-as-standby` command (system/deploy/images/postgres/entrypoint.sh), run
once in a container of the image with the lost primary's data volume, secrets and network, makes
it a standby of the promoted one; its own container then starts on that copy and streams. A
switchover follows (the promoted one's fast shutdown sends it every WAL record), the old primary
is promoted, and the other one is rebuilt the same way as its standby; it returns once the
deployment's guard (postgres-sync-guard) has made the primary's commits wait for it again. The
containers themselves are never replaced, so the target's controls, logs and published ports
keep meaning what they meant.

`replication_held()` stops the primary's WAL senders for the drill, so its standby is behind
when the primary dies."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.polling import until
from preflight.targets.containers.control import ContainerControl
from preflight.targets.servers import HELD_SENDERS

PRIMARY = "postgres"  # the compose services, and their addresses on the network they share
STANDBY = "postgres-standby"
SUPERUSER_PASSWORD_FILE = "/run/secrets/postgres_password"  # noqa: S105 - a path, no secret
PROMOTE_WAIT_S = 60
REJOIN_COMMAND = "rejoin-as-standby"
COPY_TIMEOUT_S = 600  # the one-off copy of the other server's data
STREAMING_WITHIN_S = 120.0
SYNCHRONOUS_WITHIN_S = 30.0
KILLED_WITHIN_S = 10.0  # a container the engine is killing shows it stopped (or restarted)
SETTLE_S = 30.0  # for a container the engine is restarting to run PostgreSQL (or stay down)


@dataclass
class ContainersFailover:
    """`primary` and `standby`: the two containers' controls; `network`: the engine's name of
    a network both join (the one-off copy joins it to reach the other server); `labels`: the
    run's, for the one-off containers (so a sweep finds one a crash left behind); `log` is told
    each step and how long it took."""

    client: Any  # the docker SDK's client
    primary: ContainerControl
    standby: ContainerControl
    network: str
    labels: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda _m: None, repr=False)

    @contextmanager
    def replication_held(self) -> Iterator[None]:
        """The WAL senders of the primary's standbys stopped (SIGSTOP, by `docker exec`) for the
        block; then continued while the container still runs (a `docker kill` meanwhile ended
        them with it)."""
        pids = self._psql(self.primary, PRIMARY, HELD_SENDERS).split()
        if not pids:
            raise TargetUnavailable(f"PostgreSQL {PRIMARY} has no WAL sender to hold: no standby")
        started = self._started_at()
        try:
            self._signal(self.primary, PRIMARY, "STOP", pids)
            yield
        finally:
            self._continue(pids, started)

    def _continue(self, pids: list[str], started: str) -> None:
        """SIGCONT to the held senders while the same run of the container goes on. A killed
        container took them with it, also when its restart policy has started it again since;
        one being killed refuses the exec, and is waited out as such."""

        def same_run() -> bool:
            return self._started_at() == started and self.primary.container.status == "running"

        if not same_run():
            return
        try:
            self._signal(self.primary, PRIMARY, "CONT", pids)
        except TargetUnavailable:
            if until(lambda: not same_run(), KILLED_WITHIN_S, interval=0.2):
                return
            raise

    def _started_at(self) -> str:
        self.primary.container.reload()
        return str((self.primary.container.attrs.get("State") or {}).get("StartedAt"))

    def promote(self) -> None:
        """Fence the lost primary, then `pg_promote()` on the standby; returns once it accepts
        writes."""
        with self._step(f"{PRIMARY} kept down (docker stop)"):
            # Not while the engine restarts it: a stop signal can be lost there (the entrypoint's
            # shell is PID 1 without a handler for it), and the stop then waits out the whole
            # grace period before SIGKILL (seen in two of three drills before this wait).
            until(lambda: _settled(self.primary.container), SETTLE_S, interval=0.1)
            self.primary.stop()
        with self._step(f"{STANDBY} promoted"):
            self._promote(self.standby, STANDBY)

    def rejoin(self) -> None:
        """Back to the starting roles: postgres the primary, postgres-standby streaming from it.
        Without a promotion since the start, the primary is only started again (if it is down)."""
        if self._in_recovery(self.standby, STANDBY):
            with self._step(f"{PRIMARY} started again, {STANDBY} streaming from it"):
                self.primary.start()
                self._wait_streaming(source=(self.primary, PRIMARY), standby=self.standby)
                self._wait_synchronous()
            return
        with self._step(f"{PRIMARY} rebuilt as a standby of {STANDBY}"):
            self._rebuild(self.primary, source=(self.standby, STANDBY))
        with self._step(f"switched over: {STANDBY} stopped, {PRIMARY} promoted"):
            self.standby.stop()  # a fast shutdown sends its last WAL to the rebuilt one first
            self._promote(self.primary, PRIMARY)
        with self._step(f"{STANDBY} rebuilt as a standby of {PRIMARY}"):
            self._rebuild(self.standby, source=(self.primary, PRIMARY))
        with self._step(f"{PRIMARY} synchronous again (its guard)"):
            self._wait_synchronous()

    # -- steps -------------------------------------------------------------------------------

    @contextmanager
    def _step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.log(f"failover: {what} in {time.monotonic() - started:.1f} s")

    def _promote(self, server: ContainerControl, name: str) -> None:
        done = self._psql(
            server, name, f"SELECT pg_promote(wait => true, wait_seconds => {PROMOTE_WAIT_S})"
        )
        if done != "t" or self._in_recovery(server, name):
            raise TargetUnavailable(
                f"PostgreSQL {name} was not promoted within {PROMOTE_WAIT_S} s "
                f"(pg_promote answered {done!r})"
            )

    def _in_recovery(self, server: ContainerControl, name: str) -> bool:
        return self._psql(server, name, "SELECT pg_is_in_recovery()") == "t"

    def _rebuild(self, server: ContainerControl, source: tuple[ContainerControl, str]) -> None:
        """`server` stopped, its data volume made again as a standby of `source` by the image's
        `rejoin-as-standby` command, started, streaming."""
        server.stop()
        self._copy(server.container, source[1])
        server.start()
        self._wait_streaming(source=source, standby=server)

    def _copy(self, container: Any, source: str) -> None:
        """`rejoin-as-standby` once, in a container made like `container` (its image, data
        volume, secrets, environment and host name, the last naming it to its new primary)
        but for the primary it copies."""
        container.reload()
        config = container.attrs["Config"]
        env = self._env(container)
        # How the compose file's standby copies its primary (the replication role, its password
        # file, the slot), for a primary whose own environment does not say.
        for key, value in self._env(self.standby.container).items():
            if key.startswith(("POSTGRES_REPLICATION_", "POSTGRES_STANDBY_")):
                env.setdefault(key, value)
        env["POSTGRES_PRIMARY_HOST"] = source
        volumes = {
            (m["Name"] if m["Type"] == "volume" else m["Source"]): {
                "bind": m["Destination"],
                "mode": "rw" if m.get("RW", True) else "ro",
            }
            for m in container.attrs.get("Mounts") or ()
            if m["Type"] in ("volume", "bind")
        }
        copier = self.client.containers.create(
            config["Image"],
            [REJOIN_COMMAND],
            environment=env,
            hostname=config.get("Hostname"),
            network=self.network,
            volumes=volumes,
            labels=self.labels,
        )
        try:
            copier.start()
            code = int(copier.wait(timeout=COPY_TIMEOUT_S)["StatusCode"])
            tail = copier.logs(tail=10).decode(errors="replace").strip()
        finally:
            copier.remove(force=True)
        if code != 0:
            raise TargetUnavailable(
                f"PostgreSQL {container.name}: `{REJOIN_COMMAND}` from {source} exited {code}: "
                f"{tail[-600:]}"
            )

    @staticmethod
    def _env(container: Any) -> dict[str, str]:
        """A container's environment (its image's and its own), by name."""
        entries = container.attrs["Config"].get("Env") or ()
        return dict(entry.partition("=")[::2] for entry in entries)

    def _wait_streaming(
        self, *, source: tuple[ContainerControl, str], standby: ContainerControl
    ) -> None:
        """Until `source` shows `standby` (by its host name, its application_name) streaming."""
        standby.container.reload()
        host = str(standby.container.attrs["Config"].get("Hostname"))
        sql = (
            "SELECT count(*) FROM pg_stat_replication "  # noqa: S608 - our own host name
            f"WHERE application_name = '{host}' AND state = 'streaming'"
        )

        def streaming() -> bool:
            try:
                return self._psql(source[0], source[1], sql) == "1"
            except TargetUnavailable:
                return False  # still starting

        if not until(streaming, STREAMING_WITHIN_S, interval=0.5):
            tail = standby.container.logs(tail=10).decode(errors="replace").strip()
            raise TargetUnavailable(
                f"PostgreSQL {host} was not streaming from {source[1]} within "
                f"{STREAMING_WITHIN_S:.0f} s; its last lines: {tail[-600:]}"
            )

    def _signal(self, server: ContainerControl, name: str, signal: str, pids: list[str]) -> None:
        """`kill -s signal pids` in `server`'s container (the shell's own kill)."""
        try:
            code, out = server.container.exec_run(
                ["sh", "-c", 'kill -s "$0" "$@"', signal, *pids], user="postgres"
            )
        except Exception as exc:  # docker.errors.APIError: the container does not run
            raise TargetUnavailable(f"PostgreSQL {name}: {exc}") from exc
        if code != 0:
            message = (out or b"").decode(errors="replace").strip()
            raise TargetUnavailable(f"PostgreSQL {name}: kill -s {signal} failed: {message[-400:]}")

    def _wait_synchronous(self) -> None:
        """Until the primary's commits wait for its standby: the deployment's guard
        (postgres-sync-guard) sets that within a second of the standby streaming."""
        sql = "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"
        if not until(lambda: self._psql(self.primary, PRIMARY, sql) != "0", SYNCHRONOUS_WITHIN_S):
            raise TargetUnavailable(
                f"PostgreSQL {PRIMARY} did not replicate synchronously within "
                f"{SYNCHRONOUS_WITHIN_S:.0f} s of its standby streaming: is postgres-sync-guard "
                "running? (its logs say what it sees)"
            )

    def _psql(self, server: ContainerControl, name: str, sql: str) -> str:
        """`sql`'s one value, by psql in `server`'s container as the superuser."""
        script = f'PGPASSWORD="$(cat {SUPERUSER_PASSWORD_FILE})" exec psql -h 127.0.0.1 '
        script += '-U postgres -d postgres -XAtc "$1"'
        try:
            code, (out, err) = server.container.exec_run(
                ["sh", "-c", script, "psql", sql], demux=True
            )
        except Exception as exc:  # docker.errors.APIError: the container does not run
            raise TargetUnavailable(f"PostgreSQL {name}: {exc}") from exc
        if code != 0:
            message = (err or out or b"").decode(errors="replace").strip()
            raise TargetUnavailable(f"PostgreSQL {name}: `{sql}` failed: {message[-400:]}")
        return (out or b"").decode().strip()


def _settled(container: Any) -> bool:
    """Whether `container` is down for good or runs PostgreSQL itself as its main process: not
    between two starts, nor still in its entrypoint's shell."""
    container.reload()
    state = container.attrs.get("State") or {}
    if state.get("Restarting"):
        return False
    if not state.get("Running"):
        return True
    try:
        return Path(f"/proc/{int(state['Pid'])}/comm").read_text().strip() == "postgres"
    except (OSError, ValueError, KeyError):
        return False
