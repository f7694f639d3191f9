"""Running the app on a socket and draining it: shared by `python -m chatsdk` and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from chatsdk.app import create_app
from chatsdk.keys import DEPENDENCIES, LIFECYCLE, METRICS
from chatsdk.logs import JsonAccessLogger, access_logger
from chatsdk.settings import DRAIN_BUDGET_SECONDS, Settings

log = logging.getLogger("chatsdk.server")


@dataclass
class RunningServer:
    app: web.Application
    runner: web.AppRunner
    settings: Settings
    host: str
    port: int
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def drain(self) -> None:
        """Readiness 503 at once, wait the drain delay (answers close their connections), stop
        listening, finish in-flight requests, close WebSockets with 1001, close the pools."""
        started = time.monotonic()
        self.app[LIFECYCLE].draining = True
        self.app[METRICS].draining.set(1)
        self.app[METRICS].ready.set(0)
        log.info(
            "draining",
            extra={
                "fields": {
                    "drain_delay_s": self.settings.drain_delay,
                    "shutdown_timeout_s": self.settings.shutdown_timeout,
                }
            },
        )
        await asyncio.sleep(self.settings.drain_delay)
        self.stopped = True
        # Stop listening, then let the requests being served finish before runner.cleanup:
        # from its first step on, aiohttp reads nothing more from any connection, so a request
        # whose body was still arriving (an upload the edge streams to us) would be cut.
        for site in list(self.runner.sites):
            await stop_listening(site, self.runner)
        lifecycle = self.app[LIFECYCLE]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_timeout):
                await lifecycle.idle.wait()
        if lifecycle.requests:
            log.warning(
                "requests still in flight after the shutdown timeout",
                extra={"fields": {"requests": lifecycle.requests}},
            )
        # runner.cleanup closes idle connections, closes WebSockets with 1001 (on_shutdown),
        # waits up to shutdown_timeout for what is left, then runs the cleanup contexts (pools).
        remaining = DRAIN_BUDGET_SECONDS - (time.monotonic() - started)
        cleanup = asyncio.create_task(self.runner.cleanup(), name="drain")
        # Past the point where a healthy drain has ended, say where every task waits: a drain
        # that then hits the budget (or the supervisor's SIGKILL) has left its reason in the log.
        done, _ = await asyncio.wait({cleanup}, timeout=max(remaining - STUCK_REPORT_BEFORE_S, 0))
        if not done:
            log.warning(
                "drain is slow",
                extra={
                    "fields": {
                        "elapsed_s": round(time.monotonic() - started, 3),
                        "tasks": describe_tasks(),
                    }
                },
            )
        remaining = DRAIN_BUDGET_SECONDS - (time.monotonic() - started)
        await asyncio.wait_for(cleanup, timeout=max(remaining, 0.1))
        log.info("stopped", extra={"fields": {"drain_s": round(time.monotonic() - started, 3)}})


async def stop_listening(site: web.BaseSite, runner: web.AppRunner) -> None:
    """Close the site's listener without resetting the connections the kernel has already
    completed for it: closing a listening socket resets every connection still in its accept
    queue, and a proxy that connected has already sent its request on it (a POST it then
    answers 502, since it does not send it again). Under load the queue is rarely empty. So the
    socket is kept open through a duplicate while the site stops, its queue is accepted and
    served (each answer with `Connection: close`, as the worker drains), and only then is it
    closed: what connects afterwards is refused, and a proxy passes a refused connect on."""
    server = getattr(site, "_server", None)
    listening = [
        socket.socket(s.family, s.type, s.proto, os.dup(s.fileno()))
        for s in getattr(server, "sockets", None) or ()
    ]
    await site.stop()
    loop = asyncio.get_running_loop()
    for sock in listening:
        with sock:
            sock.setblocking(False)
            while runner.server is not None:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                conn.setblocking(False)
                await loop.connect_accepted_socket(runner.server, conn)
    await asyncio.sleep(0)  # the handlers of the accepted connections start reading


async def start_server(
    settings: Settings, app: web.Application | None = None, *, startup_wait: float = 0.0
) -> RunningServer:
    """Set the app up and listen. With `startup_wait`, the listener opens once the databases
    answer and the migrations settled, or after that many seconds, whichever comes first: an
    edge without health checks (NGINX's upstreams) sends requests to whatever accepts them, so
    a restarted worker that listened while still connecting would answer them 503. A worker
    whose databases stay down listens after the wait all the same, to answer liveness and say
    in its readiness what it misses."""
    if app is None:
        app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log_class=JsonAccessLogger,
        access_log=access_logger(),
        shutdown_timeout=settings.shutdown_timeout,
        handle_signals=False,
    )
    await runner.setup()
    if startup_wait > 0:
        await _wait_for_dependencies(app, startup_wait)
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    return RunningServer(app, runner, settings, host, port)


async def _wait_for_dependencies(app: web.Application, wait_s: float) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(wait_s):
            await app[DEPENDENCIES].settled.wait()
    except TimeoutError:
        log.warning("databases not ready; listening anyway", extra={"fields": {"waited_s": wait_s}})
    else:
        log.info(
            "databases ready",
            extra={"fields": {"waited_s": round(time.monotonic() - started, 3)}},
        )


@asynccontextmanager
async def running(
    settings: Settings, app: web.Application | None = None
) -> AsyncIterator[RunningServer]:
    server = await start_server(settings, app)
    try:
        yield server
    finally:
        if not server.stopped:
            server.stopped = True
            await server.runner.cleanup()


STUCK_REPORT_BEFORE_S = 3.0


def describe_tasks() -> list[str]:
    """Each pending task and the chain of awaits it is suspended in, outermost first."""
    described = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        chain: list[str] = []
        awaited: object = task.get_coro()
        while awaited is not None and len(chain) < 20:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:  # a future, or something else that is not a coroutine
                chain.append(type(awaited).__name__)
                break
            chain.append(
                f"{frame.f_code.co_name} "
                f"({frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})"
            )
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        described.append(f"{task.get_name()}: {' > '.join(chain)}")
    return sorted(described)
