"""End-to-end message throughput and delivery latency through the real native stack.

    .venv/bin/python bench/messages.py --rates 100,250,500,750 --duration 30 --workers 2

One app, one public channel with 10 recipients, each holding a WebSocket (wss, through the
edge) subscribed to it; sender users POST messages at a fixed open-loop rate per step. Latency is
measured from just before the POST is written to the moment each socket has the frame (one host
clock: CLOCK_MONOTONIC is shared by all processes). Senders and receivers run in their own
processes; their CPU is reported next to the system's, since all share the same cores.

Before the steps, pgbench measures the plain insert rate of the same PostgreSQL as a reference.
With --profile, an extra step at --profile-rate runs py-spy on every API worker and prints where
their CPU goes. A benchmark, not a test: pytest does not collect it (these machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from preflight.client import ChatClient, expect
from preflight.postgres_bin import PG_BIN
from preflight.targets.native import NativeOptions, NativeTarget, NativeTestOptions

RECIPIENTS = 10
PER_SENDER_RATE = 12.0  # msg/s per sending user: under the API's 20/s send_message bucket
MAX_IN_FLIGHT = 512
DRAIN_WAIT = 10.0
PGBENCH = PG_BIN / "pgbench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting from /proc ------------------------------------------------------------------


def _stat(pid: int, kernel_only: bool = False) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    user, system = int(fields[11]), int(fields[12])
    return int(fields[1]), (system if kernel_only else user + system) / CLK_TCK


def tree_cpu(root: int, kernel_only: bool = False) -> float:
    """CPU seconds (or only the kernel's part) of a process and all its live descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry), kernel_only)) is not None:
            stats[int(entry)] = s
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children[pid])
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts) - idle) / CLK_TCK, sum(parts) / CLK_TCK


# -- the receiving process: 10 sockets ----------------------------------------------------------


@dataclass
class SocketStats:
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    last_seq: int = 0


async def _receive(  # noqa: PLR0915 - one coroutine owns the sockets and the control pipe
    *,
    ws_url: str,
    ca_file: str,
    tokens: list[str],
    channel_id: str,
    after_seq: int,
    ctl: Connection,
) -> None:
    ctx = ssl.create_default_context(cafile=ca_file)
    latencies: dict[int, array[int]] = defaultdict(lambda: array("q"))
    per_step: dict[int, list[SocketStats]] = defaultdict(lambda: [SocketStats() for _ in tokens])
    seen: list[set[int]] = [set() for _ in tokens]
    errors: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sockets = []
        for token in tokens:
            ws = await session.ws_connect(ws_url, ssl=ctx, heartbeat=None, compress=0)
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
            auth = json.loads((await ws.receive(timeout=10)).data)
            assert auth.get("type") == "authenticated", f"auth failed: {auth}"
            await ws.send_str(
                json.dumps({"type": "subscribe", "channel_id": channel_id, "after_seq": after_seq})
            )
            sockets.append(ws)

        async def pump(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            last = after_seq
            async for msg in ws:
                now = time.monotonic_ns()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    errors[f"frame {msg.type.name}"] += 1
                    continue
                frame = json.loads(msg.data)
                if frame.get("type") != "message.new":
                    if frame.get("type") == "error":
                        errors[f"error {frame.get('code')}"] += 1
                    continue
                seq = frame["seq"]
                text = frame["data"]["text"]
                if not text.startswith("b|"):
                    continue
                _, step_s, _, t0_s = text.split("|")
                stats = per_step[int(step_s)][i]
                if seq in seen[i]:
                    stats.duplicates += 1
                    continue
                seen[i].add(seq)
                if seq != last + 1:
                    stats.out_of_order += 1
                last = seq
                stats.delivered += 1
                stats.last_seq = seq
                latencies[int(step_s)].append(now - int(t0_s))
            errors[f"socket {i} closed {ws.close_code}"] += 1

        pumps = [asyncio.create_task(pump(i, ws)) for i, ws in enumerate(sockets)]
        ctl.send("ready")
        while True:
            await asyncio.sleep(0.05)
            if not ctl.poll():
                continue
            command, step = ctl.recv()
            if command == "quit":
                break
            if command == "count":
                ctl.send(sum(s.delivered for s in per_step[step]))
            elif command == "stats":
                socks = per_step[step]
                ctl.send(
                    {
                        "delivered": sum(s.delivered for s in socks),
                        "per_socket": [s.delivered for s in socks],
                        "duplicates": sum(s.duplicates for s in socks),
                        "out_of_order": sum(s.out_of_order for s in socks),
                        "errors": dict(errors),
                        "latencies_ns": latencies.pop(step, array("q")).tobytes(),
                    }
                )
        for task in pumps:
            task.cancel()
        for ws in sockets:
            await ws.close()


def receiver_main(job: dict[str, Any], ctl: Connection) -> None:
    asyncio.run(_receive(**job, ctl=ctl))


# -- the sending processes ----------------------------------------------------------------------


@dataclass
class SendResult:
    attempted: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_start: float = 0.0
    last_end: float = 0.0
    max_lag_ms: float = 0.0
    post_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0


async def _send(
    *,
    base_url: str,
    ca_file: str,
    tokens: list[str],
    channel_id: str,
    rate: float,
    duration: float,
    step: int,
    proc: int,
    start_at: float,
) -> SendResult:
    ctx = ssl.create_default_context(cafile=ca_file)
    total = int(rate * duration)
    result = SendResult(attempted=total)
    statuses: Counter[str] = Counter()
    url = f"{base_url}/v1/channels/{channel_id}/messages"
    connector = aiohttp.TCPConnector(ssl=ctx, limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=30)
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    headers = [{"Authorization": f"Bearer {t}"} for t in tokens]

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(i: int) -> None:
            try:
                t0 = time.monotonic_ns()
                body = {"text": f"b|{step}|{proc}.{i}|{t0}"}
                async with session.post(url, json=body, headers=headers[i % len(headers)]) as r:
                    await r.read()
                    statuses[str(r.status)] += 1
                    if r.status == 201:
                        result.ok += 1
                result.post_ms.append((time.monotonic_ns() - t0) / 1e6)
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            finally:
                result.last_end = time.monotonic()
                in_flight.release()

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        start = time.monotonic()
        result.first_start = start
        tasks = set()
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await in_flight.acquire()
            result.max_lag_ms = max(result.max_lag_ms, (time.monotonic() - due) * 1000)
            task = asyncio.create_task(post(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*list(tasks))
    result.statuses = dict(statuses)
    return result


def sender_main(job: dict[str, Any], out: Connection) -> None:
    cpu0 = time.process_time()
    result = asyncio.run(_send(**job))
    result.cpu_s = time.process_time() - cpu0
    out.send(asdict(result))


# -- pgbench reference --------------------------------------------------------------------------

PLAIN_INSERT = (
    "\\set ch random(1, 10)\n"
    "INSERT INTO bench_scratch (channel_id, body) VALUES (:ch, 'a message of about forty bytes');\n"
)
# The API's pattern in one statement: bump one channel row's counter (a row lock every sender of
# the channel waits for) and insert with that seq, committed (fsync) per message.
SAME_ROW_INSERT = (
    "WITH s AS (UPDATE bench_counter SET last_seq = last_seq + 1 WHERE id = 1 "
    "RETURNING last_seq) INSERT INTO bench_scratch (channel_id, seq, body) "
    "SELECT 1, last_seq, 'a message of about forty bytes' FROM s;\n"
)
SCRATCH_SQL = (
    "DROP TABLE IF EXISTS bench_scratch; DROP TABLE IF EXISTS bench_counter; "
    "CREATE TABLE bench_scratch (id bigserial PRIMARY KEY, channel_id int NOT NULL, "
    "seq bigint, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now()); "
    "CREATE TABLE bench_counter (id int PRIMARY KEY, last_seq bigint NOT NULL); "
    "INSERT INTO bench_counter VALUES (1, 0);"
)


def pgbench(dsn: str, script: str, clients: int, seconds: int, workdir: Path) -> dict[str, Any]:
    url = urlsplit(dsn)
    env = {
        **os.environ,
        "PGPASSWORD": url.password or "",
        "PGHOST": url.hostname or "",
        "PGPORT": str(url.port),
        "PGUSER": url.username or "",
        "PGDATABASE": url.path.lstrip("/"),
    }
    psql = PGBENCH.parent / "psql"
    subprocess.run([str(psql), "-X", "-q", "-c", SCRATCH_SQL], env=env, check=True, timeout=30)
    path = workdir / "script.sql"
    path.write_text(script)
    argv = [str(PGBENCH), "-n", "-f", str(path), "-c", str(clients), "-j", "2", "-T", str(seconds)]
    out = subprocess.run(
        argv, env=env, check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    tps = next(float(line.split("=")[1].split()[0]) for line in out.splitlines() if "tps =" in line)
    latency = next(
        (
            float(line.split("=")[1].split()[0])
            for line in out.splitlines()
            if "latency average" in line
        ),
        math.nan,
    )
    subprocess.run(
        [str(psql), "-X", "-q", "-c", "DROP TABLE bench_scratch; DROP TABLE bench_counter;"],
        env=env,
        check=True,
        timeout=30,
    )
    return {"tps": tps, "latency_ms": latency, "clients": clients, "seconds": seconds}


# -- py-spy -------------------------------------------------------------------------------------


def _frame(raw: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`."""
    name, _, where = raw.partition(" (")
    if not where:
        return raw
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1].rstrip(')')})"


# Who owns a sample: the deepest frame whose file matches one of these, first match wins. The
# socket write comes first: with the cores busy, a worker is often preempted right after a send()
# wakes the peer, and the sampler records that frame (docs/PERFORMANCE.md, "API CPU per message:
# where a worker's CPU goes").
COMPONENTS = (
    ("socket write", ("_SelectorSocketTransport.write ",)),
    ("TLS to PostgreSQL", ("asyncio/sslproto.py", "/ssl.py")),
    ("sentry_sdk", ("sentry_sdk/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("logging", ("logging/", "chatsdk/logs.py", "chatsdk/logship.py")),
    ("json", ("json/",)),
    ("jwt", ("jwt/",)),
    ("asyncpg", ("asyncpg/", "chatsdk/dbtiming.py", "chatsdk/pooltiming.py")),
    ("redis-py", ("redis/",)),
    ("aiohttp websocket", ("aiohttp/_websocket/", "aiohttp/web_ws.py", "chatsdk/wsframes.py")),
    ("aiohttp http", ("aiohttp/",)),
    ("chatsdk", ("chatsdk/",)),
    ("other threads waiting", ("threading.py", "queue.py")),
    ("event loop", ("asyncio/", "selectors.py")),
)


def _component(stack: list[str]) -> str:
    for raw in reversed(stack):
        for name, patterns in COMPONENTS:
            if any(p in raw for p in patterns):
                return name
    return "other"


def summarise_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive shares of the frames in py-spy's raw (collapsed) output, and each
    sample given to the component that owns its deepest known frame (COMPONENTS)."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        raw_frames = stack.split(";")
        frames = [_frame(f) for f in raw_frames]
        total += count
        self_time[frames[-1]] += count
        components[_component(raw_frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return {"self": [], "inclusive": [], "components": []}
    return {
        "self": [(f, round(100 * n / total, 1)) for f, n in self_time.most_common(top)],
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top * 2)],
        "components": [(c, round(100 * n / total, 1)) for c, n in components.most_common()],
        "samples": total,
    }


# -- the run ------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


@dataclass
class World:
    channel_id: str
    recipient_tokens: list[str]
    sender_tokens: list[str]


def build_world(chat: ChatClient, admin_key: str, senders: int) -> World:
    created = expect(chat.as_admin(admin_key).post("/v1/apps", {"name": "bench"}), 201)
    backend = chat.as_app(created["api_key"])

    def token(user_id: str) -> str:
        return str(expect(backend.post("/v1/tokens", {"user_id": user_id}), 201)["access_token"])

    owner = chat.as_user(token("owner"))
    recipients = [token(f"r{i}") for i in range(RECIPIENTS)]
    sender_tokens = [token(f"s{i}") for i in range(senders)]
    channel = expect(owner.post("/v1/channels", {"name": "bench", "kind": "public"}), 201)
    channel_id = channel["channel_id"]
    ids = [f"r{i}" for i in range(RECIPIENTS)] + [f"s{i}" for i in range(senders)]
    for i in range(0, len(ids), 100):
        expect(
            owner.post(f"/v1/channels/{channel_id}/members", {"user_ids": ids[i : i + 100]}), 200
        )
    return World(channel_id, recipients, sender_tokens)


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts)]


def run_step(  # noqa: PLR0915 - start, measure, drain, collect: one step reads top to bottom
    *,
    target: NativeTarget,
    chat: ChatClient,
    world: World,
    ctl: Connection,
    step: int,
    rate: float,
    duration: float,
    procs: int,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    assert target.info is not None
    assert target.info.edge.ca_file is not None
    ca = str(target.info.edge.ca_file)
    pids = {c.name: c.pid for c in target.children if c.running()}
    groups = {
        "api": [p for n, p in pids.items() if n.startswith("api-")],
        "nginx": [pids["nginx"]],
        "postgres": [pids["postgres"]],
        "redis": [pids["redis"]],
    }
    n_senders = max(1, math.ceil(rate / PER_SENDER_RATE))
    tokens = world.sender_tokens[:n_senders]
    assert len(tokens) == n_senders, f"{rate} msg/s needs {n_senders} sender users"
    procs = min(procs, n_senders)  # a process without a sender user would have nothing to do
    spawn = mp.get_context("spawn")
    start_at = time.monotonic() + 1.5  # the processes start first, then send in step
    pipes, processes = [], []
    for i, chunk in enumerate(split(tokens, procs)):
        parent, child = spawn.Pipe()
        p = spawn.Process(
            target=sender_main,
            args=(
                {
                    "base_url": chat.base_url,
                    "ca_file": ca,
                    "tokens": chunk,
                    "channel_id": world.channel_id,
                    "rate": rate / procs,
                    "duration": duration,
                    "step": step,
                    "proc": i,
                    "start_at": start_at,
                },
                child,
            ),
        )
        p.start()
        pipes.append(parent)
        processes.append(p)
    profilers = []
    if profile_dir is not None and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
        spy = str(Path(sys.executable).parent / "py-spy")
        for pid in groups["api"]:
            out = profile_dir / f"api-{pid}.txt"
            profilers.append(
                (
                    out,
                    subprocess.Popen(
                        [
                            spy,
                            "record",
                            "-p",
                            str(pid),
                            "-d",
                            str(int(duration)),
                            "-r",
                            "100",
                            "-f",
                            "raw",
                            "-o",
                            str(out),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            )
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = {g: sum(tree_cpu(p) for p in ps) for g, ps in groups.items()}
    sys0 = {g: sum(tree_cpu(p, kernel_only=True) for p in ps) for g, ps in groups.items()}
    busy0, total0 = machine_busy()
    wall0 = time.monotonic()
    results = [SendResult(**pipe.recv()) for pipe in pipes]
    for p in processes:
        p.join(timeout=10)
    wall = time.monotonic() - wall0
    cpu1 = {g: sum(tree_cpu(p) for p in ps) for g, ps in groups.items()}
    sys1 = {g: sum(tree_cpu(p, kernel_only=True) for p in ps) for g, ps in groups.items()}
    busy1, total1 = machine_busy()
    ok = sum(r.ok for r in results)
    # Wait until every delivery arrived or nothing moved for a while.
    deadline, last, last_change = time.monotonic() + DRAIN_WAIT, -1, time.monotonic()
    while time.monotonic() < deadline:
        ctl.send(("count", step))
        count = ctl.recv()
        if count >= ok * RECIPIENTS:
            break
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > 3:
            break
        time.sleep(0.1)
    ctl.send(("stats", step))
    got = ctl.recv()
    lat = array("q")
    lat.frombytes(got.pop("latencies_ns"))
    ms = sorted(v / 1e6 for v in lat)
    post_ms = sorted(x for r in results for x in r.post_ms)
    statuses: Counter[str] = Counter()
    for r in results:
        statuses.update(r.statuses)
    span = max(r.last_end for r in results) - min(r.first_start for r in results)
    gen_cpu = sum(r.cpu_s for r in results)
    profile = {}
    for out, proc in profilers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if out.exists():
            profile[out.stem] = summarise_profile(out)
    return {
        "step": step,
        "target_rate": rate,
        "duration_s": duration,
        "sender_users": n_senders,
        "sender_processes": procs,
        "attempted": sum(r.attempted for r in results),
        "ok": ok,
        "statuses": dict(statuses),
        "sustained_msgs_per_s": round(ok / span, 1) if span > 0 else 0.0,
        "expected_deliveries": ok * RECIPIENTS,
        "delivered": got["delivered"],
        "delivered_ratio": round(got["delivered"] / (ok * RECIPIENTS), 5) if ok else 0.0,
        "deliveries_per_s": round(got["delivered"] / span, 1) if span > 0 else 0.0,
        "duplicates": got["duplicates"],
        "out_of_order": got["out_of_order"],
        "receiver_errors": got["errors"],
        "delivery_ms": {
            "p50": round(percentile(ms, 0.50), 2),
            "p95": round(percentile(ms, 0.95), 2),
            "p99": round(percentile(ms, 0.99), 2),
            "max": round(ms[-1], 2) if ms else math.nan,
        },
        "post_ms": {
            "p50": round(percentile(post_ms, 0.50), 2),
            "p95": round(percentile(post_ms, 0.95), 2),
            "p99": round(percentile(post_ms, 0.99), 2),
        },
        "sender_max_lag_ms": round(max(r.max_lag_ms for r in results), 1),
        "cpu_percent_of_one_core": {
            **{g: round(100 * (cpu1[g] - cpu0[g]) / wall, 1) for g in groups},
            "generator_senders": round(100 * gen_cpu / wall, 1),
            "machine_busy_of_all_cores": round(100 * (busy1 - busy0) / (total1 - total0), 1),
        },
        "kernel_share_percent": {
            g: round(100 * (sys1[g] - sys0[g]) / (cpu1[g] - cpu0[g]), 1)
            for g in groups
            if cpu1[g] > cpu0[g]
        },
        "profile": profile,
    }


def print_step(r: dict[str, Any]) -> None:
    d, c = r["delivery_ms"], r["cpu_percent_of_one_core"]
    print(
        f"{r['target_rate']:>5.0f} msg/s target: sustained {r['sustained_msgs_per_s']:.0f} msg/s, "
        f"{r['deliveries_per_s']:.0f} deliveries/s, delivered {r['delivered']}/"
        f"{r['expected_deliveries']} ({100 * r['delivered_ratio']:.2f} %), "
        f"delivery p50/p95/p99 {d['p50']}/{d['p95']}/{d['p99']} ms, "
        f"POST p95 {r['post_ms']['p95']} ms, statuses {r['statuses']}, "
        f"dup {r['duplicates']}, gaps {r['out_of_order']}",
        flush=True,
    )
    print(f"       CPU (% of one core): {c}", flush=True)
    print(f"       of which in the kernel (%): {r['kernel_share_percent']}", flush=True)


def broke(r: dict[str, Any]) -> bool:
    return bool(
        r["delivered_ratio"] < 0.99
        or r["ok"] < 0.99 * r["attempted"]
        or r["delivery_ms"]["p95"] > 1000
        or r["sustained_msgs_per_s"] < 0.9 * r["target_rate"]
    )


def environment() -> dict[str, Any]:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "kernel": os.uname().release,
    }


def main(argv: Iterable[str] | None = None) -> None:  # noqa: PLR0912, PLR0915 - the run, in order
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="100,250,500,750", help="msg/s per step, in order")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--workers", type=int, default=2, help="API workers")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--sender-procs", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--keep-going", action="store_true", help="run every rate even if one broke"
    )
    parser.add_argument("--no-pgbench", action="store_true")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="an extra step under py-spy")
    parser.add_argument("--profile-rate", type=float, default=500.0)
    parser.add_argument(
        "--profile-keep",
        type=Path,
        metavar="DIR",
        help="keep py-spy's raw (collapsed) stacks of each worker in DIR",
    )
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the API workers (e.g. to try a variant of the code)",
    )
    parser.add_argument(
        "--asynchronous-replication",
        action="store_true",
        help="without the synchronous replication guard: commits do not wait for the standby "
        "(to measure what waiting for it costs)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    rates = [float(x) for x in args.rates.split(",")]
    max_rate = max([*rates, args.profile_rate if args.profile else 0.0])

    report: dict[str, Any] = {
        "environment": environment(),
        "args": vars(args) | {"out": str(args.out), "profile_keep": str(args.profile_keep)},
    }
    print(f"environment: {report['environment']}", flush=True)
    options = NativeOptions(
        workers=args.workers,
        nginx_workers=args.nginx_workers,
        api_rate_per_s=1_000_000,
        ws_rate_per_s=10_000,
        worker_env=dict(item.split("=", 1) for item in args.worker_env),
        test=NativeTestOptions(asynchronous_replication=args.asynchronous_replication),
    )
    target = NativeTarget(options)
    with target as info, tempfile.TemporaryDirectory(prefix="bench-messages-") as tmp:
        assert info.stores.postgres_dsn is not None
        assert info.edge.ca_file is not None
        print(f"native target ready in {target.started_in:.1f} s", flush=True)
        if not args.no_pgbench:
            report["pgbench"] = {
                "plain_insert_8_clients": pgbench(
                    info.stores.postgres_dsn, PLAIN_INSERT, 8, args.pgbench_seconds, Path(tmp)
                ),
                "same_row_seq_insert_8_clients": pgbench(
                    info.stores.postgres_dsn, SAME_ROW_INSERT, 8, args.pgbench_seconds, Path(tmp)
                ),
            }
            print(f"pgbench: {report['pgbench']}", flush=True)
        chat = ChatClient.for_target(info)
        world = build_world(chat, info.admin_key, math.ceil(max_rate / PER_SENDER_RATE))
        spawn = mp.get_context("spawn")
        ctl, child = spawn.Pipe()
        receiver = spawn.Process(
            target=receiver_main,
            args=(
                {
                    "ws_url": chat.ws_url,
                    "ca_file": str(info.edge.ca_file),
                    "tokens": world.recipient_tokens,
                    "channel_id": world.channel_id,
                    "after_seq": 0,
                },
                child,
            ),
        )
        receiver.start()
        if not ctl.poll(30) or ctl.recv() != "ready":
            raise SystemExit("the receiving sockets did not connect within 30 s")
        recv_pid = receiver.pid
        assert recv_pid is not None
        steps = []
        try:
            for step, rate in enumerate(rates, start=1):
                cpu0, t0 = tree_cpu(recv_pid), time.monotonic()
                result = run_step(
                    target=target,
                    chat=chat,
                    world=world,
                    ctl=ctl,
                    step=step,
                    rate=rate,
                    duration=args.duration,
                    procs=args.sender_procs,
                )
                # Includes the drain wait; a slight underestimate of the receiving rate's cost.
                result["cpu_percent_of_one_core"]["generator_receiver"] = round(
                    100 * (tree_cpu(recv_pid) - cpu0) / (time.monotonic() - t0), 1
                )
                steps.append(result)
                print_step(result)
                if broke(result) and not args.keep_going:
                    print(f"stopping: {rate:.0f} msg/s did not hold", flush=True)
                    break
            if args.profile:
                profile_dir = Path(tmp) / "profile"
                profile_dir.mkdir()
                result = run_step(
                    target=target,
                    chat=chat,
                    world=world,
                    ctl=ctl,
                    step=len(rates) + 1,
                    rate=args.profile_rate,
                    duration=min(args.duration, 20.0),
                    procs=args.sender_procs,
                    profile_dir=profile_dir,
                )
                print_step(result)
                for name, summary in result["profile"].items():
                    print(f"py-spy {name}: top self time:", flush=True)
                    for frame, share in summary["self"]:
                        print(f"    {share:5.1f} %  {frame}")
                    print(f"py-spy {name}: top inclusive:", flush=True)
                    for frame, share in summary["inclusive"]:
                        print(f"    {share:5.1f} %  {frame}")
                    print(f"py-spy {name}: by component (deepest known frame):", flush=True)
                    for component, share in summary["components"]:
                        print(f"    {share:5.1f} %  {component}")
                report["profile_step"] = result
                if args.profile_keep:
                    args.profile_keep.mkdir(parents=True, exist_ok=True)
                    for raw in profile_dir.iterdir():
                        shutil.copy(raw, args.profile_keep / raw.name)
        finally:
            ctl.send(("quit", 0))
            receiver.join(timeout=10)
            if receiver.is_alive():
                receiver.terminate()
        report["steps"] = steps
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
