"""Child processes of the native target: started with a parent-death signal, logged to a file,
waited for with a deadline, stopped with the component's own graceful signal."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import secrets
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from preflight.errors import TargetUnavailable
from preflight.polling import until

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. CPython switches user/group before calling
    # preexec_fn, so the flag survives the drop to the `postgres` user (the kernel clears it on a
    # credential change). Without it, a SIGKILLed launcher leaves orphans behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # Own process group, so a Ctrl-C on the terminal reaches the launcher alone; the launcher
    # then stops every child in order.
    os.setpgid(0, 0)


@dataclass(frozen=True)
class RunAs:
    """A system user to drop to when the launcher runs as root (PostgreSQL refuses root)."""

    uid: int
    gid: int

    @classmethod
    def system_user(cls, name: str) -> RunAs | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            entry = pwd.getpwnam("nobody")
        return cls(entry.pw_uid, entry.pw_gid)


@dataclass
class Child:
    """One running component process."""

    name: str
    argv: Sequence[str]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(
        self,
        env: Mapping[str, str] | None = None,
        run_as: RunAs | None = None,
        cwd: Path | None = None,
    ) -> None:
        exe = self.argv[0]
        if not (os.path.isabs(exe) and os.access(exe, os.X_OK)):
            raise TargetUnavailable(
                f"{self.name}: executable {exe!r} not found; run `make run` (it installs the "
                "system packages) or install it with apt-get"
            )
        log = self.log_path.open("ab")
        kwargs: dict[str, object] = {}
        if run_as is not None:
            kwargs = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
        try:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - launched from the main thread only
                **kwargs,  # type: ignore[call-overload]
            )
        finally:
            log.close()
        self.expected_exit = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = text.splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"

    def exit_reason(self) -> str:
        """How the process ended: "signal SIGKILL", "exit code 1" (it must have ended)."""
        assert self.proc is not None
        code = self.proc.returncode
        assert code is not None
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def crashed_message(self) -> str:
        assert self.proc is not None
        return (
            f"{self.name} (pid {self.proc.pid}) stopped unexpectedly with {self.exit_reason()}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self) -> int | None:
        """Graceful stop, SIGKILL after `stop_timeout`; returns the exit code."""
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.proc.poll() is None:
            self.signal(self.stop_signal)
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def kill(self, *, expected: bool = True) -> None:
        """SIGKILL and wait for the process to end. `expected=False` leaves it a crash: what a
        supervisor restarts (supervisor.py) and, unsupervised, what `crashed()` reports."""
        if expected:
            self.expected_exit = True
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=5)


def wait_until(
    child: Child,
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> None:
    """Poll `ready` until it is true; fail early (with the log) if the child dies."""

    def up() -> bool:
        if not child.running():
            raise TargetUnavailable(f"{child.name} did not start: {child.crashed_message()}")
        return ready()

    if not until(up, timeout, interval=interval):
        raise TargetUnavailable(
            f"{child.name} was not {what} within {timeout:.0f} s; last lines of "
            f"{child.log_path}:\n{child.log_tail()}"
        )


_HANDED_OUT: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port to listen on that is free now, chosen at random below the kernel's ephemeral range.
    Port 0's answer comes from that range, where every outgoing connection of every process
    also takes its source port: between this check and the server's bind, another test process
    or a client could take it (seen with the suite in parallel processes). Below the range only
    another listener choosing the same random port could, and a port is never handed out twice
    by one process."""
    top = _ephemeral_start() - 1
    low = min(20000, top - 1000)
    for _ in range(200):
        port = secrets.randbelow(top - low) + low
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: any port
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ensure_port_free(port: int, what: str, option: str, host: str = "127.0.0.1") -> None:
    """A port chosen by the user must be free before anything starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TargetUnavailable(
                    f"{what} port {host}:{port} is already in use; choose another with {option} "
                    f"or stop the process holding it (`ss -ltnp 'sport = :{port}'` shows which)"
                ) from None
            raise TargetUnavailable(f"{what} port {host}:{port} cannot be bound: {exc}") from None
