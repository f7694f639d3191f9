"""The native target's child processes: each started and remembered with how it was started, so
that a drill can stop, kill and start it again the same way; stopped in order; reported when
one exits without being asked to."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from preflight.targets.procs import Child, RunAs

Launch = tuple[dict[str, str] | None, RunAs | None]  # a child's environment and user


def is_worker(name: str) -> bool:
    """API workers are the children named api-0, api-1, ..."""
    return name.startswith("api-")


@dataclass(frozen=True)
class ChildControl:
    """Drill control over one child process of the native target (base.ComponentControl)."""

    child: Child
    restart: Callable[[], None]
    # For an API worker: take it out of the edge's rotation (False) before a graceful stop and
    # put it back (True) once started, as a platform's deploy does. A kill is a crash: the
    # edge learns of it only from failed connections.
    route: Callable[[bool], None] | None = None

    def stop(self) -> int | None:
        if self.route is not None and self.child.running():
            self.route(False)
        return self.child.stop()

    def kill(self) -> None:
        self.child.kill()

    def start(self) -> None:
        if self.child.running():
            return
        self.restart()
        if self.route is not None:
            self.route(True)


class Supervisor:
    """The children of one native target, in the order they were started."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.start_args: dict[str, Launch] = {}

    def spawn(
        self, child: Child, env: dict[str, str] | None = None, run_as: RunAs | None = None
    ) -> Child:
        child.start(env=env, run_as=run_as)
        self.children.append(child)
        self.start_args[child.name] = (env, run_as)
        return child

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def restarter(self, child: Child) -> Callable[[], None]:
        def restart() -> None:
            # Looked up at restart: a worker put on another release restarts on that release.
            env, run_as = self.start_args[child.name]
            child.start(env=env, run_as=run_as)

        return restart

    def relaunch(self, child: Child, env: dict[str, str]) -> int | None:
        """Stop `child` gracefully and start it again with `env` (kept for later restarts); the
        old process's exit code."""
        code = child.stop()
        run_as = self.start_args[child.name][1]
        self.start_args[child.name] = (env, run_as)
        child.start(env=env, run_as=run_as)
        return code

    def controls(self, route: Callable[[str, bool], None]) -> dict[str, ChildControl]:
        """A control per child; the API workers' stops and starts go through `route`."""
        return {
            c.name: ChildControl(
                c, self.restarter(c), route=partial(route, c.name) if is_worker(c.name) else None
            )
            for c in self.children
        }

    def stop_all(self, order: Mapping[str, int]) -> None:
        """SIGTERM every API worker first so they drain in parallel, then stop every child in
        `order` (a rank per name; unnamed children rank 1), whatever fails on the way."""
        for c in self.children:
            if is_worker(c.name):
                c.expected_exit = True
                c.signal(signal.SIGTERM)
        for child in sorted(self.children, key=lambda c: order.get(c.name, 1)):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()

    def crashed(self) -> list[Child]:
        """Children that exited without being asked to."""
        return [c for c in self.children if not c.expected_exit and not c.running()]
