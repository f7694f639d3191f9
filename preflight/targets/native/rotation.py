"""The native target's edge (NGINX) and its rotation of API workers: configured from the
options, started from the rendered configuration, a worker drained before a graceful stop and
rejoined once it can serve, each by re-rendering the configuration and reloading NGINX."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from preflight.targets.edge import (
    EdgeConfig,
    nginx_command,
    reload_nginx,
    render_edge,
    validate_edge,
)
from preflight.targets.native.health import can_serve, http_ok
from preflight.targets.native.options import NativeOptions
from preflight.targets.pki import Pki
from preflight.targets.procs import Child

EDGE_RELOAD_TIMEOUT_S = 10.0  # NGINX's old workers stop accepting within this after a SIGHUP
REJOIN_POLL_S = 0.1

Upstream = tuple[str, int]


def edge_config(
    options: NativeOptions,
    workdir: Path,
    ports: tuple[int, int],
    api_ports: Sequence[int],
    pki: Pki,
) -> EdgeConfig:
    """The edge as `options` ask: HTTPS and plain-HTTP `ports`, the workers on loopback."""
    https_port, http_port = ports
    return EdgeConfig(
        workdir=workdir,
        https_port=https_port,
        http_port=http_port,
        upstreams=[("127.0.0.1", p) for p in api_ports],
        pki=pki,
        worker_processes=options.nginx_workers,
        worker_connections=options.nginx_worker_connections,
        worker_rlimit_nofile=options.nginx_rlimit_nofile,
        api_rate_per_s=options.api_rate_per_s,
        ws_rate_per_s=options.ws_rate_per_s,
        api_burst=max(50, options.api_rate_per_s // 2),
        ws_burst=max(25, options.ws_rate_per_s // 2),
        web_source=options.test.web_dir,
    )


class Edge:
    """The edge in front of the API workers named in `upstream_of` (name -> host and port)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        upstream_of: Mapping[str, Upstream],
        template_dir: Path | None,
        log: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.upstream_of = dict(upstream_of)
        self.template_dir = template_dir
        self.log = log
        self.child: Child | None = None
        self._lock = threading.Lock()
        self._generation: dict[str, int] = {}

    def start(self, spawn: Callable[[Child], Child], logs: Path) -> Child:
        """Render and validate the configuration, then start NGINX (not yet ready)."""
        conf = render_edge(self.cfg, template_dir=self.template_dir)
        validate_edge(conf)
        self.child = spawn(
            Child("nginx", nginx_command(conf), logs / "nginx.log", signal.SIGQUIT, 10.0)
        )
        return self.child

    def running(self) -> bool:
        return self.child is not None and self.child.running()

    def route(self, name: str, serving: bool) -> None:
        """Take API worker `name` out of the edge's rotation (`down`) or put it back.

        Out: before a graceful stop, as a platform removes a stopping pod from its endpoints.
        The edge is reloaded and this returns once every NGINX worker still accepting runs the
        new configuration, so no new request reaches a worker about to close its listener (a
        request that met the closing listener was lost as a 502: the rollout drill saw it).

        Back: from a watcher thread, once the started worker can serve, with no deadline, as a
        platform gates on readiness (a worker still connecting to its databases answers 503,
        and the edge does not retry a POST that got an answer). "Can serve" is ready, or its
        database and Redis answering with its migrations settled (see health.can_serve). A
        worker started while a database is down comes back when the database does; if it is the
        only one left, as soon as it listens (the edge would otherwise have no server at all). A
        later route call for the same worker supersedes the watcher."""
        upstream = self.upstream_of.get(name)
        if upstream is None or not self.running():
            return
        with self._lock:
            generation = self._generation[name] = self._generation.get(name, 0) + 1
        if not serving:
            self._set_drained(upstream, True, name, generation)
            return
        threading.Thread(
            target=self._rejoin_when_serving,
            args=(name, upstream, generation),
            name=f"rejoin-{name}",
            daemon=True,
        ).start()

    def _rejoin_when_serving(self, name: str, upstream: Upstream, generation: int) -> None:
        base = f"http://{upstream[0]}:{upstream[1]}"
        while self.running():
            with self._lock:
                if self._generation.get(name) != generation:
                    return
                alone = set(self.upstream_of.values()) <= self.cfg.drained
            if can_serve(f"{base}/v1/health/ready") or (
                alone and http_ok(f"{base}/v1/health/live")
            ):
                self._set_drained(upstream, False, name, generation)
                return
            time.sleep(REJOIN_POLL_S)

    def _set_drained(self, upstream: Upstream, drained: bool, name: str, generation: int) -> None:
        """Render the edge with `upstream` drained or not and reload it, unless a newer route
        call for the worker came first; returns once the reload took effect."""
        with self._lock:
            if self._generation.get(name) != generation or self.child is None:
                return
            now = set(self.cfg.drained)
            if (upstream in now) == drained:
                return
            if drained and set(self.upstream_of.values()) - now == {upstream}:
                # The last one serving: taking it out would leave the edge no server at all.
                return
            (now.add if drained else now.discard)(upstream)
            self.cfg = replace(self.cfg, drained=frozenset(now))
            render_edge(self.cfg, template_dir=self.template_dir)
            if not reload_nginx(self.child.pid, EDGE_RELOAD_TIMEOUT_S):
                self.log(
                    f"the edge's reload (upstream {upstream[0]}:{upstream[1]} "
                    f"{'down' if drained else 'back'}) did not take effect within "
                    f"{EDGE_RELOAD_TIMEOUT_S:g} s"
                )
