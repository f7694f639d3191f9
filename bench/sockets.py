"""WebSocket connections held through the real edge for minutes, answering the server's pings.

    .venv/bin/python bench/sockets.py --sockets 10000 --hold 300 --out bench-sockets.json

One native target (2 API workers, 1 NGINX worker, TLS). --sockets wss connections go through
the edge, the target's CA verified, each from its own address of 127.64.0.0/10: the edge's
per-address limits stay as shipped and see a crowd, as they would in production. Each socket
authenticates with the token of its user (one user per --sockets-per-user sockets, as many
sockets of one user as open tabs) and subscribes to its user's channel (--channel-users users per
channel). The sockets open at --ramp-rate per second, at most --connect-concurrency at once, in
one asyncio process (--client-procs splits them).

Then they are held for --hold seconds. The API pings every idle socket every 20 s and closes one
whose pong does not come back (aiohttp's heartbeat); the client answers (the websockets library
does) and counts the pings. Every 10 s: the sockets still open on the client side, the API's
active_websocket_connections summed over the workers, CPU, RSS and open files of the API workers,
NGINX and the client. Every --post-every seconds, one message is posted to each of
--post-channels channels, and the bench checks that it reached every socket subscribed to that
channel at the time of the POST.

The shipped edge has `worker_connections 4096` and `worker_rlimit_nofile 8192` per NGINX worker,
and a proxied WebSocket takes two connections. By default (`--edge-connections auto`) the bench
raises both to fit --sockets and reports what it raised; `--edge-connections shipped` keeps the
shipped values, to measure that bound. Each socket also takes two of the NGINX worker's open
files; a worker cannot raise its limit above the hard limit it inherits unless it may
(CAP_SYS_RESOURCE), so where that limit is 20,000 one worker holds about 9,990 sockets and
--nginx-workers 2 splits them. The control, --no-pong: the client stops answering pings, so the
API must drop every socket within about 30 s, and the bench must report the drops.
A benchmark, not a test: pytest does not collect it (these machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import multiprocessing as mp
import os
import re
import resource
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.version import version as websockets_version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from bench.messages import environment, machine_busy, percentile, tree_cpu
from preflight.client import ChatClient, expect
from preflight.targets.native import NativeOptions, NativeTarget

SOURCE_NET = ipaddress.ip_network("127.64.0.0/10")  # as loadtests/sources.py
SHIPPED_WORKER_CONNECTIONS = 4096  # system/nginx/nginx.conf.j2, per NGINX worker
SHIPPED_RLIMIT_NOFILE = 8192
HEARTBEAT_S = 20.0  # chatsdk.realtime.HEARTBEAT: the API pings a socket idle this long
OPEN_TIMEOUT_S = 30.0  # TCP + TLS + upgrade + authenticated + subscribed
CLOSE_TIMEOUT_S = 5.0
SAMPLE_EVERY_S = 10.0
DELIVERY_WAIT_S = 10.0
CONTROL_TIMEOUT_S = 60.0
CLOSE_ALL_TIMEOUT_S = 300.0
MARK = "hold|"  # the text of a delivery check: hold|<post id>|<CLOCK_MONOTONIC ns at POST>


# -- the client process: N sockets in one event loop ---------------------------------------------


class HeldConnection(ClientConnection):
    """Counts the pings the server sends (each one answered by the protocol itself)."""

    answer_pings = True

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.pings = 0
        if not self.answer_pings:
            send_frame = protocol.send_frame

            def no_pong(frame: Frame) -> None:
                if frame.opcode is not Opcode.PONG:
                    send_frame(frame)

            protocol.send_frame = no_pong  # type: ignore[method-assign]

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings += 1
        super().process_event(event)


class SilentConnection(HeldConnection):
    """The control: a client that never answers a ping (the server must drop it)."""

    answer_pings = False


class Refused(Exception):
    """The API answered the auth or subscribe frame with an error frame."""


def reason_of(exc: BaseException) -> str:  # noqa: PLR0911 - one line per kind of failure
    """A short, countable reason for a socket that did not open."""
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        text = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
        return f"closed {code} {text}".strip()
    if isinstance(exc, TimeoutError):
        return f"timeout (not subscribed within {OPEN_TIMEOUT_S:g} s)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS {exc.reason or type(exc).__name__}"
    if isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        return f"no HTTP response ({type(cause).__name__ if cause else 'invalid'})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__} errno {exc.errno}"
    return f"{type(exc).__name__}: {str(exc)[:80]}"


def close_reason(ws: ClientConnection) -> str:
    code = ws.close_code if ws.close_code is not None else 1006
    return f"closed {code} {ws.close_reason or ''}".strip()


async def expect_frame(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == kind:
            return dict(frame)
        if frame.get("type") == "error":
            raise Refused(f"{kind} refused: {frame.get('code')}")


@dataclass
class Client:
    """One process's share of the sockets, and what happened to them."""

    ws_url: str
    ca_file: str
    specs: list[tuple[int, str, str, str]]  # (index, token, channel id, source address)
    rate: float
    concurrency: int
    answer_pings: bool
    start_at: float = 0.0  # CLOCK_MONOTONIC, shared by all processes; sent with "start"
    open: dict[int, HeldConnection] = field(default_factory=dict)
    by_channel: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    attempted: int = 0
    concluded: int = 0
    connect_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    max_lag_ms: float = 0.0
    ramp_s: float | None = None
    hold_pings: dict[int, int] | None = None
    hold_drops: Counter[str] = field(default_factory=Counter)
    hold_drop_at: list[float] = field(default_factory=list)
    hold_t0: float = 0.0
    hold_over: bool = False
    expected: dict[int, set[int]] = field(default_factory=dict)
    received: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    closing: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    all_concluded: asyncio.Event = field(default_factory=asyncio.Event)

    async def ramp(self) -> None:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        cls = HeldConnection if self.answer_pings else SilentConnection
        gate = asyncio.Semaphore(self.concurrency)
        if not self.specs:
            self.all_concluded.set()
        await asyncio.sleep(max(0.0, self.start_at - time.monotonic()))
        start = time.monotonic()
        for n, spec in enumerate(self.specs):
            due = start + n / self.rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            self.max_lag_ms = max(self.max_lag_ms, (time.monotonic() - due) * 1000)
            self.attempted += 1
            task = asyncio.create_task(self.hold_one(spec, ctx, cls, gate))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        await self.all_concluded.wait()
        self.ramp_s = time.monotonic() - start

    async def open_one(
        self, spec: tuple[int, str, str, str], ctx: ssl.SSLContext, cls: type[HeldConnection]
    ) -> HeldConnection:
        _, token, channel_id, source = spec
        ws = await connect(
            self.ws_url,
            ssl=ctx,
            local_addr=(source, 0),
            proxy=None,
            compression=None,
            open_timeout=None,  # the caller bounds the whole opening
            ping_interval=None,  # the server's heartbeat, not ours, keeps the socket alive
            ping_timeout=None,
            close_timeout=CLOSE_TIMEOUT_S,
            user_agent_header="preflight-bench-sockets",
            create_connection=cls,
        )
        assert isinstance(ws, HeldConnection)
        try:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            await expect_frame(ws, "authenticated")
            await ws.send(json.dumps({"type": "subscribe", "channel_id": channel_id}))
            await expect_frame(ws, "subscribed")
        except BaseException:
            ws.transport.abort()
            raise
        return ws

    async def hold_one(
        self,
        spec: tuple[int, str, str, str],
        ctx: ssl.SSLContext,
        cls: type[HeldConnection],
        gate: asyncio.Semaphore,
    ) -> None:
        index, _, channel_id, _ = spec
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                ws = await self.open_one(spec, ctx, cls)
        except Exception as exc:
            self.failures[reason_of(exc)] += 1
            return
        finally:
            self.concluded += 1
            if self.concluded == len(self.specs):
                self.all_concluded.set()
            gate.release()
        self.connect_ms.append((time.monotonic() - t0) * 1000)
        self.open[index] = ws
        self.by_channel[channel_id].add(index)
        try:
            async for raw in ws:
                if isinstance(raw, str) and MARK in raw:
                    self.on_marked(index, raw)
        except ConnectionClosed:
            pass
        finally:
            del self.open[index]
            self.by_channel[channel_id].discard(index)
            if not self.closing:
                reason = close_reason(ws)
                self.closes[reason] += 1
                if self.hold_pings is not None and index in self.hold_pings and not self.hold_over:
                    self.hold_drops[reason] += 1
                    self.hold_drop_at.append(round(time.monotonic() - self.hold_t0, 1))

    def on_marked(self, index: int, raw: str) -> None:
        now = time.monotonic_ns()
        frame = json.loads(raw)
        text = str((frame.get("data") or {}).get("text") or "")
        if frame.get("type") == "message.new" and text.startswith(MARK):
            self.received[int(text.split("|")[1])].setdefault(index, now)

    def answer(self, command: str, arg: Any) -> Any:
        if command == "status":
            return {
                "attempted": self.attempted,
                "concluded": self.concluded,
                "open": len(self.open),
                "failed": sum(self.failures.values()),
                "ramp_done": self.ramp_s is not None,
            }
        if command == "hold":
            self.hold_t0 = time.monotonic()
            self.hold_pings = {i: ws.pings for i, ws in self.open.items()}
            return len(self.hold_pings)
        if command == "expect":
            post_id, channel_id = arg
            self.expected[post_id] = set(self.by_channel[channel_id]) & set(self.open)
            return len(self.expected[post_id])
        if command == "delivery":
            wanted = self.expected.get(arg, set())
            got = self.received.get(arg, {})
            return {
                "expected": len(wanted),
                "received_ns": [got[i] for i in wanted if i in got],
                "extra": len(set(got) - wanted),
            }
        if command == "end_hold":
            self.hold_over = True
            start = self.hold_pings or {}
            pings = [ws.pings - start[i] for i, ws in self.open.items() if i in start]
            return {
                "held_at_start": len(start),
                "still_open": sum(1 for i in self.open if i in start),
                "dropped": dict(self.hold_drops),
                "dropped_at_s": sorted(self.hold_drop_at),
                "pings_per_held_socket": pings,
            }
        raise ValueError(f"unknown command {command!r}")

    async def close_all(self) -> float:
        self.closing = True
        t0 = time.monotonic()
        sockets = list(self.open.values())
        for i in range(0, len(sockets), 1000):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S * 2):
                    await asyncio.gather(
                        *(ws.close() for ws in sockets[i : i + 1000]), return_exceptions=True
                    )
        for ws in sockets:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()
        return time.monotonic() - t0

    def final(self, closed_in_s: float) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "connect_ms": self.connect_ms,
            "failures": dict(self.failures),
            "closes": dict(self.closes),
            "max_lag_ms": round(self.max_lag_ms, 1),
            "ramp_s": self.ramp_s,
            "closed_in_s": round(closed_in_s, 1),
            "cpu_s": time.process_time(),
        }

    async def serve(self, ctl: Connection) -> None:
        ramp = asyncio.create_task(self.ramp())
        while True:
            await asyncio.sleep(0.05)
            while ctl.poll():
                command, arg = ctl.recv()
                if command == "close":
                    ramp.cancel()
                    ctl.send(self.final(await self.close_all()))
                elif command == "quit":
                    for task in list(self.tasks):
                        task.cancel()
                    return
                else:
                    ctl.send(self.answer(command, arg))


def client_main(job: dict[str, Any], ctl: Connection) -> None:
    ctl.send("ready")  # imported and started: a baseline of this process's memory is fair
    command, start_at = ctl.recv()
    assert command == "start", f"the first command must be start (got {command!r})"
    asyncio.run(Client(**job, start_at=start_at).serve(ctl))


class Clients:
    """The client processes, asked the same question at once; their answers, in order."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        spawn = mp.get_context("spawn")
        self.procs: list[tuple[BaseProcess, Connection]] = []
        for job in jobs:
            parent, child = spawn.Pipe()
            proc = spawn.Process(target=client_main, args=(job, child), daemon=True)
            proc.start()
            self.procs.append((proc, parent))
        for started, pipe in self.procs:
            if not pipe.poll(CONTROL_TIMEOUT_S) or pipe.recv() != "ready":
                raise SystemExit(f"client process {started.pid} did not start")

    def start(self, at: float) -> None:
        for _, pipe in self.procs:
            pipe.send(("start", at))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self.procs if p.pid is not None]

    def ask(self, command: str, arg: Any = None, timeout: float = CONTROL_TIMEOUT_S) -> list[Any]:
        for _, pipe in self.procs:
            pipe.send((command, arg))
        answers = []
        for proc, pipe in self.procs:
            if not pipe.poll(timeout):
                raise SystemExit(f"client process {proc.pid} did not answer {command!r} in time")
            answers.append(pipe.recv())
        return answers

    def stop(self) -> None:
        for proc, pipe in self.procs:
            with contextlib.suppress(OSError):
                pipe.send(("quit", None))
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


# -- the world: an app, users, channels, and the sockets' plan ---------------------------------


def post(client: ChatClient, path: str, body: Any, status: int, attempts: int = 20) -> Any:
    """The edge's per-address limit applies to this setup too (it all comes from 127.0.0.1):
    a 429 waits for its Retry-After instead of raising the limit."""
    for _ in range(attempts - 1):
        resp = client.post(path, body)
        if resp.status != 429:
            return expect(resp, status)
        time.sleep(float(resp.headers.get("retry-after", "1")))
    return expect(client.post(path, body), status)


@dataclass(frozen=True)
class World:
    specs: list[tuple[int, str, str, str]]
    channels: list[tuple[str, str]]  # (channel id, its owner's token: the delivery checks' poster)
    users: int


def build_world(chat: ChatClient, admin_key: str, args: argparse.Namespace) -> World:
    created = post(chat.as_admin(admin_key), "/v1/apps", {"name": "sockets"}, 201)
    backend = chat.as_app(created["api_key"])
    users = math.ceil(args.sockets / args.sockets_per_user)
    tokens = [
        str(post(backend, "/v1/tokens", {"user_id": f"u{u}"}, 201)["access_token"])
        for u in range(users)
    ]
    channel_of_user: list[str] = []
    channels: list[tuple[str, str]] = []
    for first in range(0, users, args.channel_users):
        members = list(range(first, min(users, first + args.channel_users)))
        owner = chat.as_user(tokens[first])
        body = {"name": f"room {first // args.channel_users}", "kind": "public"}
        channel_id = str(post(owner, "/v1/channels", body, 201)["channel_id"])
        if len(members) > 1:
            ids = {"user_ids": [f"u{u}" for u in members[1:]]}
            post(owner, f"/v1/channels/{channel_id}/members", ids, 200)
        channels.append((channel_id, tokens[first]))
        channel_of_user.extend(channel_id for _ in members)
    # Socket i belongs to user i % users: any prefix of the ramp spreads over every user.
    specs = [
        (
            i,
            tokens[i % users],
            channel_of_user[i % users],
            str(SOURCE_NET.network_address + 1 + i),
        )
        for i in range(args.sockets)
    ]
    return World(specs, channels, users)


# -- sampling the machine ------------------------------------------------------------------------


def tree(pids: Iterable[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    return procs


def open_files(pid: int) -> int:
    """From /proc: psutil's num_fds() and rlimit() are refused for NGINX's workers (another
    user) on these machines, /proc/<pid>/fd and /proc/<pid>/limits are not."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def nofile_limit(pid: int) -> int | None:
    try:
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    line = next((x for x in limits if x.startswith("Max open files")), None)
    return int(line.split()[3]) if line and line.split()[3].isdigit() else None


def rss_and_fds(pids: Iterable[int]) -> tuple[int, int]:
    rss = fds = 0
    for proc in tree(pids):
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
        fds += open_files(proc.pid)
    return rss, fds


def nginx_workers(master: int) -> list[dict[str, int | None]]:
    """Each NGINX worker's open files against its own limit (worker_rlimit_nofile)."""
    return [
        {"pid": proc.pid, "fds": open_files(proc.pid), "nofile": nofile_limit(proc.pid)}
        for proc in tree([master])[1:]
    ]


def tcp_sockstat() -> dict[str, int]:
    """The kernel's TCP socket count and memory (pages) from /proc/net/sockstat."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()[1:]
            return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    return {}


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # internal addresses


def websocket_gauges(metrics_urls: Sequence[str]) -> list[float | None]:
    """Each worker's active_websocket_connections; None for a worker that did not answer."""
    values: list[float | None] = []
    for url in metrics_urls:
        try:
            with OPENER.open(url, timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            values.append(None)
            continue
        values.append(
            next(
                (
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith("active_websocket_connections ")
                ),
                None,
            )
        )
    return values


class Sampler:
    """CPU since the previous sample, RSS and open files now, per component group."""

    def __init__(self, groups: dict[str, list[int]], metrics_urls: Sequence[str]) -> None:
        self.groups = groups
        self.metrics_urls = metrics_urls
        self.samples: list[dict[str, Any]] = []
        self._last = self._counters()

    def _counters(self) -> tuple[float, dict[str, float], float, float, float]:
        cpu = {g: sum(tree_cpu(p) for p in pids) for g, pids in self.groups.items()}
        busy, total = machine_busy()
        return time.monotonic(), cpu, tree_cpu(os.getpid()), busy, total

    def cpu_since(
        self, mark: tuple[float, dict[str, float], float, float, float]
    ) -> dict[str, float]:
        """% of one core per group since `mark`; `other`: the machine's busy time that is not
        this bench's process tree (someone else's load on the same cores)."""
        now = self._counters()
        wall = now[0] - mark[0]
        if wall <= 0:
            return {}
        # A process that exited (a PostgreSQL backend) takes its CPU out of the tree's sum.
        out = {g: round(100 * max(0.0, now[1][g] - mark[1][g]) / wall, 1) for g in self.groups}
        busy = now[3] - mark[3]
        out["machine_busy_of_all_cores"] = round(100 * busy / (now[4] - mark[4]), 1)
        out["other_not_this_bench"] = round(100 * max(0.0, busy - (now[2] - mark[2])) / wall, 1)
        return out

    def mark(self) -> tuple[float, dict[str, float], float, float, float]:
        return self._counters()

    def sample(self, phase: str, t: float, client_open: int) -> dict[str, Any]:
        cpu = self.cpu_since(self._last)
        self._last = self._counters()
        gauges = websocket_gauges(self.metrics_urls)
        memory = {}
        for g in ("api", "nginx", "client"):
            rss, fds = rss_and_fds(self.groups[g])
            memory[g] = {"rss_mib": round(rss / 2**20, 1), "fds": fds}
        row = {
            "phase": phase,
            "t_s": round(t, 1),
            "client_open": client_open,
            "api_gauge": sum(g or 0 for g in gauges),
            "api_gauge_by_worker": gauges,
            "cpu_pct_of_one_core": cpu,
            "memory": memory,
            "nginx_workers": nginx_workers(self.groups["nginx"][0]),
            "tcp": tcp_sockstat(),
            "mem_available_mib": mem_available_mib(),
        }
        self.samples.append(row)
        return row


def show(row: dict[str, Any]) -> None:
    cpu, mem = row["cpu_pct_of_one_core"], row["memory"]
    print(
        f"  {row['phase']:>4} t={row['t_s']:>6.1f}s  client open {row['client_open']:>6}  "
        f"API gauge {row['api_gauge']:>7.0f} {row['api_gauge_by_worker']}  "
        f"CPU% api {cpu.get('api')} nginx {cpu.get('nginx')} client {cpu.get('client')} "
        f"busy {cpu.get('machine_busy_of_all_cores')} other {cpu.get('other_not_this_bench')}  "
        f"RSS MiB api {mem['api']['rss_mib']} nginx {mem['nginx']['rss_mib']} "
        f"client {mem['client']['rss_mib']}",
        flush=True,
    )


# -- delivery during the hold -------------------------------------------------------------------


def delivery_round(
    chat: ChatClient, clients: Clients, post_id: int, channel_id: str, token: str
) -> dict[str, Any]:
    """One message to one channel: did every socket subscribed to it (at the POST) get it?"""
    expected = sum(clients.ask("expect", (post_id, channel_id)))
    poster = chat.as_user(token)
    t0 = time.monotonic_ns()
    try:
        resp = poster.post(f"/v1/channels/{channel_id}/messages", {"text": f"{MARK}{post_id}|{t0}"})
        status = str(resp.status)
    except OSError as exc:
        status = type(exc).__name__
    finally:
        poster.close()
    received: list[int] = []
    extra = 0
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while True:
        answers = clients.ask("delivery", post_id)
        received = [ns for a in answers for ns in a["received_ns"]]
        extra = sum(a["extra"] for a in answers)
        if status != "201" or len(received) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ms = sorted((ns - t0) / 1e6 for ns in received)
    return {
        "post_id": post_id,
        "channel_id": channel_id,
        "status": status,
        "expected": expected,
        "delivered": len(received),
        "extra": extra,
        "latency_ms": ms,
    }


# -- the run ------------------------------------------------------------------------------------


def raise_nofile(sockets: int, nginx_nofile: int) -> dict[str, Any]:
    """The client holds every socket and an API worker may hold all of them: the soft limit of
    this process (inherited by the API workers and the client processes) must fit them. NGINX's
    workers set their own (worker_rlimit_nofile) but cannot go above the hard limit they
    inherit from here unless they may raise it (CAP_SYS_RESOURCE): the hard limit is raised for
    them too when this process may, and the run says so when it may not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_soft, want_hard = sockets + 4096, max(hard, sockets + 4096, nginx_nofile)
    refused = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want_soft), want_hard))
    except (OSError, ValueError) as exc:
        refused = f"hard limit {want_hard} refused ({exc}); kept {hard}"
        if soft < want_soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want_soft, hard), hard))
    after = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"before": [soft, hard], "after": list(after), "refused": refused}


def edge_limits(value: str, sockets: int) -> tuple[int, int]:
    """(worker_connections, worker_rlimit_nofile) of the NGINX worker for this run."""
    if value == "shipped":
        return SHIPPED_WORKER_CONNECTIONS, SHIPPED_RLIMIT_NOFILE
    if value == "auto":
        # Two connections per socket (client side, upstream side), plus room for API requests.
        connections = max(SHIPPED_WORKER_CONNECTIONS, 2 * sockets + 1024)
    else:
        connections = int(value)
    # The shipped ratio: a file descriptor for every connection, twice over.
    return connections, max(SHIPPED_RLIMIT_NOFILE, 2 * connections)


def log_summary(path: Path, top: int = 8) -> dict[str, int]:
    """NGINX error-log lines above notice, or API log lines at warning and above, counted by
    message (numbers, addresses and ids stripped so that like counts with like)."""
    counts: Counter[str] = Counter()
    if not path.exists():
        return {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") not in ("WARNING", "ERROR", "CRITICAL"):
                continue
            message = f"{record['level']} {record.get('logger', '')}: {record.get('msg', '')}"
        else:
            match = re.search(r"\[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)", line)
            if match is None or match[1] in ("notice", "info", "debug"):
                continue
            message = f"[{match[1]}] {match[2].split(', client:')[0]}"
        counts[re.sub(r"\d+", "N", message)[:160]] += 1
    return dict(counts.most_common(top))


def figures(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 0.50), 1),
        "p95": round(percentile(ordered, 0.95), 1),
        "p99": round(percentile(ordered, 0.99), 1),
        "max": round(ordered[-1], 1) if ordered else math.nan,
    }


def per_socket_kib(before: dict[str, Any], after: dict[str, Any], sockets: int) -> dict[str, Any]:
    if sockets <= 0:
        return {}
    out: dict[str, Any] = {
        g: round(
            (after["memory"][g]["rss_mib"] - before["memory"][g]["rss_mib"]) * 1024 / sockets, 1
        )
        for g in ("api", "nginx", "client")
    }
    # Kernel TCP buffers of the four loopback sockets each held WebSocket takes.
    pages = after["tcp"].get("mem", 0) - before["tcp"].get("mem", 0)
    out["kernel_tcp"] = round(pages * 4 / sockets, 2)
    return out


def judge(report: dict[str, Any]) -> str:
    """What bounds the count, from the run's own evidence; a first reading, not a verdict."""
    target, reached = report["target_sockets"], report["reached"]
    dropped = sum(report["hold"]["dropped"].values())
    alerts = " ".join(report["logs"]["nginx_error"])
    conns = report["edge"]["worker_connections"]
    if reached >= target and dropped == 0:
        return (
            f"not bounded at {target}: every socket opened and was held; the edge's "
            f"worker_connections {conns} (2 per socket) and the open-file limits had room"
        )
    if "Too many open files" in alerts:
        workers = report["nginx_workers_at_end"]
        return (
            f"the NGINX worker's open files (2 per proxied socket): {reached} reached with "
            f"{[(w['fds'], w['nofile']) for w in workers]} (open, limit) per worker; the edge "
            "logged accept4() failed (Too many open files) and took no new connection at all"
        )
    if "worker_connections are not enough" in alerts:
        return (
            f"NGINX worker_connections ({conns} per worker, 2 per proxied socket): "
            f"{reached} reached, the edge logged 'worker_connections are not enough'"
        )
    if dropped:
        return f"{dropped} sockets dropped during the hold: {report['hold']['dropped']}"
    return f"{target - reached} sockets did not open: {report['failures']}"


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sockets", type=int, default=10_000, help="sockets to open (10000)")
    parser.add_argument("--hold", type=float, default=300.0, help="seconds to hold them (300)")
    parser.add_argument("--ramp-rate", type=float, default=100.0, help="connects/s (100)")
    parser.add_argument("--connect-concurrency", type=int, default=200, help="opening at once")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes (1)")
    parser.add_argument("--workers", type=int, default=2, help="API workers (2)")
    parser.add_argument("--nginx-workers", type=int, default=1, help="NGINX workers (1)")
    parser.add_argument("--sockets-per-user", type=int, default=50, help="sockets per token")
    parser.add_argument("--channel-users", type=int, default=2, help="users per channel (2)")
    parser.add_argument("--post-every", type=float, default=60.0, help="delivery checks, s")
    parser.add_argument("--post-channels", type=int, default=3, help="channels per check (3)")
    parser.add_argument(
        "--edge-connections",
        default="auto",
        help="NGINX worker_connections: auto (fit --sockets), shipped (4096), or a number",
    )
    parser.add_argument("--no-pong", action="store_true", help="control: never answer pings")
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.sockets < 1 or args.sockets >= SOURCE_NET.num_addresses - 2:
        raise SystemExit(f"--sockets must be 1..{SOURCE_NET.num_addresses - 3}")
    return args


def ramp(clients: Clients, sampler: Sampler, args: argparse.Namespace) -> dict[str, Any]:
    """Start every client process's ramp at once; sample until every socket opened or failed."""
    start_at = time.monotonic() + 0.5
    clients.start(start_at)
    mark = sampler.mark()
    deadline = start_at + args.sockets / args.ramp_rate + OPEN_TIMEOUT_S + 30
    next_sample = start_at + SAMPLE_EVERY_S
    while True:
        status = clients.ask("status")
        if all(s["ramp_done"] for s in status) or time.monotonic() > deadline:
            break
        if time.monotonic() >= next_sample:
            open_now = sum(s["open"] for s in status)
            show(sampler.sample("ramp", time.monotonic() - start_at, open_now))
            next_sample = max(next_sample + SAMPLE_EVERY_S, time.monotonic() + 1.0)
        time.sleep(0.2)
    return {
        "ramp_cpu_pct_of_one_core": sampler.cpu_since(mark),
        "ramp_wall_s": round(time.monotonic() - start_at, 1),
    }


@dataclass
class Hold:
    reached: int
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    at_end: dict[str, Any] = field(default_factory=dict)


def hold(
    clients: Clients, sampler: Sampler, chat: ChatClient, world: World, args: argparse.Namespace
) -> Hold:
    """Hold what opened: sample every 10 s, check deliveries every --post-every s."""
    result = Hold(reached=sum(clients.ask("hold")))
    hold0 = time.monotonic()
    mark = sampler.mark()
    show(sampler.sample("hold", 0.0, result.reached))
    print(f"holding {result.reached} sockets for {args.hold:g} s", flush=True)
    next_sample, next_round, post_id = hold0 + SAMPLE_EVERY_S, hold0 + 10.0, 0
    end = hold0 + args.hold
    while (now := time.monotonic()) < end:
        if now >= next_round:
            for k in range(args.post_channels):
                channel_id, token = world.channels[(len(result.rounds) + k) % len(world.channels)]
                post_id += 1
                r = delivery_round(chat, clients, post_id, channel_id, token)
                result.rounds.append(r)
                lat = figures(r["latency_ms"])
                print(
                    f"  delivery {post_id}: POST {r['status']}, {r['delivered']}/"
                    f"{r['expected']} sockets, p50 {lat['p50']} p95 {lat['p95']} ms",
                    flush=True,
                )
            next_round += args.post_every
        if time.monotonic() >= next_sample:
            open_now = sum(s["open"] for s in clients.ask("status"))
            show(sampler.sample("hold", time.monotonic() - hold0, open_now))
            next_sample = max(next_sample + SAMPLE_EVERY_S, time.monotonic() + 1.0)
        time.sleep(max(0.0, min(next_sample, next_round, end) - time.monotonic()))
    result.seconds = time.monotonic() - hold0
    result.cpu = sampler.cpu_since(mark)
    result.ends = clients.ask("end_hold")
    result.at_end = sampler.sample("end", result.seconds, sum(e["still_open"] for e in result.ends))
    show(result.at_end)
    return result


def results(
    args: argparse.Namespace, held: Hold, finals: list[dict[str, Any]], baseline: dict[str, Any]
) -> dict[str, Any]:
    """The run's figures from what the client processes and the samples reported."""
    ends, at_end, held_s = held.ends, held.at_end, held.seconds
    pings = [p for e in ends for p in e["pings_per_held_socket"]]
    still_open = sum(e["still_open"] for e in ends)
    all_ms = [ms for r in held.rounds for ms in r["latency_ms"]]
    failures: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for f in finals:
        failures.update(f["failures"])
        closes.update(f["closes"])
    for e in ends:
        dropped.update(e["dropped"])
    return {
        "reached": held.reached,
        "attempted": sum(f["attempted"] for f in finals),
        "failures": dict(failures),
        "connect_ms": figures([ms for f in finals for ms in f["connect_ms"]]),
        "ramp": {
            "rate_per_s": args.ramp_rate,
            "client_ramp_s": [f["ramp_s"] for f in finals],
            "client_max_lag_ms": max(f["max_lag_ms"] for f in finals),
        },
        "hold": {
            "seconds": round(held_s, 1),
            "held_at_start": held.reached,
            "still_open_at_end": still_open,
            "dropped": dict(dropped),
            "dropped_at_s": sorted(t for e in ends for t in e["dropped_at_s"]),
            "server_pings_answered_per_socket": {
                "min": min(pings) if pings else None,
                "mean": round(sum(pings) / len(pings), 2) if pings else None,
                "expected_about": round(held_s / HEARTBEAT_S, 1),
            },
            "api_gauge_at_end": at_end["api_gauge"],
            "api_gauge_by_worker_at_end": at_end["api_gauge_by_worker"],
            "cpu_pct_of_one_core": held.cpu,
            "per_socket_kib": per_socket_kib(baseline, at_end, still_open),
        },
        "closes_not_asked_for": dict(closes),
        "delivery": {
            "rounds": [r | {"latency_ms": figures(r["latency_ms"])} for r in held.rounds],
            "expected": sum(r["expected"] for r in held.rounds),
            "delivered": sum(r["delivered"] for r in held.rounds),
            "latency_ms": figures(all_ms),
        },
        "client": {
            "processes": len(finals),
            "cpu_s": [round(f["cpu_s"], 1) for f in finals],
            "closed_all_in_s": [f["closed_in_s"] for f in finals],
        },
        "nginx_workers_at_end": at_end["nginx_workers"],
    }


def main(argv: Iterable[str] | None = None) -> None:
    args = parse_args(argv)
    connections, rlimit = edge_limits(args.edge_connections, args.sockets)
    nofile = raise_nofile(args.sockets, rlimit)
    report: dict[str, Any] = {
        "environment": environment()
        | {"websockets": websockets_version, "loadavg_at_start": os.getloadavg()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "command": " ".join([".venv/bin/python", "bench/sockets.py", *sys.argv[1:]]),
        "target_sockets": args.sockets,
        "nofile_of_bench_api_and_client": nofile,
        "edge": {
            "worker_processes": args.nginx_workers,
            "worker_connections": connections,
            "worker_rlimit_nofile": rlimit,
            "raised_from_shipped": (connections, rlimit)
            != (SHIPPED_WORKER_CONNECTIONS, SHIPPED_RLIMIT_NOFILE),
        },
    }
    print(f"environment: {report['environment']}", flush=True)
    print(f"edge: {report['edge']}; open files: {nofile}", flush=True)
    hard = nofile["after"][1]
    if rlimit > hard:
        print(
            f"WARNING: NGINX workers cannot raise their open files above {hard} here, so each "
            f"holds at most about {(hard - 20) // 2} sockets ({nofile['refused']})",
            flush=True,
        )
    target = NativeTarget(
        NativeOptions(
            workers=args.workers,
            nginx_workers=args.nginx_workers,
            nginx_worker_connections=connections,
            nginx_rlimit_nofile=rlimit,
        )
    )
    with target as info:
        assert info.edge.ca_file is not None
        assert info.drills.processes is not None
        assert target.dir is not None
        print(f"native target ready in {target.started_in:.1f} s", flush=True)
        chat = ChatClient.for_target(info)
        t_world = time.monotonic()
        world = build_world(chat, info.admin_key, args)
        chat.close()
        print(
            f"{world.users} users, {len(world.channels)} channels in "
            f"{time.monotonic() - t_world:.1f} s",
            flush=True,
        )
        pids = info.drills.processes()
        groups = {
            "api": [p for n, p in pids.items() if n.startswith("api-")],
            "nginx": [pids["nginx"]],
            "postgres": [pids["postgres"]],
            "redis": [pids["redis"]],
            "client": [],
        }
        procs = max(1, args.client_procs)
        clients = Clients(
            [
                {
                    "ws_url": chat.ws_url,
                    "ca_file": str(info.edge.ca_file),
                    "specs": world.specs[k::procs],
                    "rate": args.ramp_rate / procs,
                    "concurrency": max(1, args.connect_concurrency // procs),
                    "answer_pings": not args.no_pong,
                }
                for k in range(procs)
            ]
        )
        try:
            groups["client"] = clients.pids
            sampler = Sampler(groups, info.observability.metrics_urls)
            baseline = sampler.sample("base", 0.0, 0)
            show(baseline)
            report |= ramp(clients, sampler, args)
            held = hold(clients, sampler, chat, world, args)
            logs_at_hold_end = log_summary(target.dir / "edge" / "nginx" / "logs" / "error.log")
            finals = clients.ask("close", timeout=CLOSE_ALL_TIMEOUT_S)
        finally:
            clients.stop()
        logs = {
            "nginx_error_at_hold_end": logs_at_hold_end,
            "nginx_error": log_summary(target.dir / "edge" / "nginx" / "logs" / "error.log"),
            "api": {
                n: log_summary(target.dir / "logs" / f"{n}.log")
                for n in pids
                if n.startswith("api-")
            },
        }

    report |= results(args, held, finals, baseline)
    report["logs"] = logs
    report["samples"] = sampler.samples
    report["bound"] = judge(report)
    summarise(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"results written to {args.out}")


def summarise(r: dict[str, Any]) -> None:
    hold, d, c = r["hold"], r["delivery"], r["connect_ms"]
    cpu = hold["cpu_pct_of_one_core"]
    mem = hold["per_socket_kib"]
    print("\n== WebSocket connections held ==")
    print(f"target {r['target_sockets']}, reached {r['reached']} (attempted {r['attempted']})")
    print(f"failed to open: {r['failures'] or 'none'}")
    print(
        f"connect (TCP+TLS+upgrade+auth+subscribe) p50/p95/p99/max ms: "
        f"{c['p50']}/{c['p95']}/{c['p99']}/{c['max']}; ramp {r['ramp']}"
    )
    print(
        f"held {hold['seconds']} s: {hold['still_open_at_end']} still open, dropped "
        f"{sum(hold['dropped'].values())} {hold['dropped'] or ''}"
    )
    print(
        f"API gauge at the end: {hold['api_gauge_at_end']:.0f} {hold['api_gauge_by_worker_at_end']}"
    )
    print(
        f"server pings answered per socket during the hold: "
        f"{hold['server_pings_answered_per_socket']}"
    )
    print(f"memory per held socket (KiB): {mem}")
    print(f"CPU during the hold (% of one core): {cpu}")
    print(f"CPU during the ramp (% of one core): {r['ramp_cpu_pct_of_one_core']}")
    print(
        f"delivery during the hold: {d['delivered']}/{d['expected']} sockets, latency ms "
        f"{d['latency_ms']}"
    )
    print(f"edge: {r['edge']}")
    print(f"NGINX log at the end of the hold: {r['logs']['nginx_error_at_hold_end'] or 'clean'}")
    print(f"NGINX log after closing: {r['logs']['nginx_error'] or 'clean'}")
    print(f"API logs: {r['logs']['api']}")
    print(f"NGINX workers at the end (open files / limit): {r['nginx_workers_at_end']}")
    other = cpu.get("other_not_this_bench", 0.0)
    if other > 20:
        print(f"NOTE: the machine was busy with other work during the hold ({other} % of one core)")
    print(f"bound: {r['bound']}")


if __name__ == "__main__":
    main()
