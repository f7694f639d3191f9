"""The native target's edge (NGINX): configured from the options and started from the rendered
configuration, with every API worker in its upstream."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from preflight.targets.edge import EdgeConfig, nginx_command, render_edge, validate_edge
from preflight.targets.native.options import NativeOptions
from preflight.targets.pki import Pki
from preflight.targets.procs import Child


def edge_config(
    options: NativeOptions,
    workdir: Path,
    ports: tuple[int, int],
    api_ports: Sequence[int],
    pki: Pki,
    *,
    log_port: int,
) -> EdgeConfig:
    """The edge as `options` ask: HTTPS and plain-HTTP `ports`, the workers on loopback, its
    logs shipped to the central log store on loopback's `log_port` too."""
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
        log_server=("127.0.0.1", log_port),
    )


class Edge:
    """The edge in front of the API workers: rendered once, validated and started. Every worker
    stays in its upstream for the life of the target; a worker being stopped or restarted is
    the system's to cope with (its drain, the edge's retries on refused connections)."""

    def __init__(self, cfg: EdgeConfig, template_dir: Path | None) -> None:
        self.cfg = cfg
        self.template_dir = template_dir
        self.child: Child | None = None

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
