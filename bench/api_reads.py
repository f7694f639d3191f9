"""Authenticated API reads through NGINX, next to references measured in the same run.

    .venv/bin/python bench/api_reads.py --duration 15 --connections 64 --out bench-api-reads.json

Three measurements against one native target (2 API workers, 1 NGINX worker, TLS), each for
--duration seconds:

1. wrk on a static file NGINX serves itself (/.well-known/security.txt): the edge's ceiling on
   this machine, the reference for the API figure.
2. wrk on an authenticated read of the API (GET /v1/channels/{id}/messages?limit=20, a page of
   a channel's history), rotating over --users bearer tokens so no user meets the API's own
   per-user limit (50 reads/s): what the system serves.
3. Locust (FastHttpUser, no wait time, one process) on the same API read: the load generator's
   requests/s per core of its own CPU, against wrk's requests/s per core of wrk's CPU.

Each wrk step also gives the CPU each component spent per request (API workers, NGINX,
PostgreSQL, Redis), in milliseconds: what bounds the read rate on these cores. With --profile,
an extra API-read step runs py-spy on every API worker and prints where their time goes, by
component (bench/messages.py's COMPONENTS).

The edge's per-address limits are raised for the run (every request comes from 127.0.0.1); the
API's per-user limits stay as shipped. A benchmark, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from bench.messages import environment, machine_busy, summarise_profile, tree_cpu
from preflight.client import ChatClient, expect
from preflight.targets.native import NativeOptions, NativeTarget

STATIC_PATH = "/.well-known/security.txt"
PAGE = 20

# wrk: rotate the tokens over requests, count non-2xx, print the figures as one JSON line.
WRK_SCRIPT = """
local tokens = {{ {tokens} }}
local n = 0
request = function()
  n = n + 1
  local headers = {{}}
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] end
  return wrk.format("GET", "{path}", headers)
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
    .. '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f}}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""

LOCUSTFILE = """
import itertools
import json
import os

from locust import FastHttpUser, constant, task

TOKENS = itertools.cycle(json.loads(os.environ["BENCH_TOKENS"]))
PATH = os.environ["BENCH_PATH"]


class Reader(FastHttpUser):
    wait_time = constant(0)
    insecure = True  # a throughput figure; the probes check the certificate

    @task
    def page(self) -> None:
        self.client.get(PATH, headers={"Authorization": f"Bearer {next(TOKENS)}"}, name="read")
"""


def component_pids(target: NativeTarget) -> dict[str, list[int]]:
    pids = {c.name: c.pid for c in target.children if c.running()}
    return {
        "api": [p for n, p in pids.items() if n.startswith("api-")],
        "nginx": [pids["nginx"]],
        "postgres": [pids["postgres"]],
        "redis": [pids["redis"]],
    }


def components_cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {g: sum(tree_cpu(p) for p in ps) for g, ps in groups.items()}


def py_spy(
    pids: list[int], seconds: int, out_dir: Path
) -> list[tuple[Path, subprocess.Popen[bytes]]]:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        raise SystemExit(f"--profile needs py-spy ({spy} is missing: make setup installs it)")
    started = []
    for pid in pids:
        out = out_dir / f"api-{pid}.txt"
        command = [str(spy), "record", "-p", str(pid), "-d", str(seconds), "-r", "100"]
        command += ["-f", "raw", "-o", str(out), "--nonblocking"]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append((out, proc))
    return started


def wrk(
    url: str,
    path: str,
    tokens: list[str],
    args: argparse.Namespace,
    tmp: Path,
    *,
    groups: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    script = tmp / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(tokens=", ".join(json.dumps(t) for t in tokens), path=path))
    command = [
        "wrk",
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={args.duration}s",
        "--timeout=5s",
        f"--script={script}",
        url + path,
    ]
    busy0, total0 = machine_busy()
    parts0 = components_cpu(groups or {})
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    cpu = 0.0
    while proc.poll() is None:
        cpu = max(cpu, tree_cpu(proc.pid))
        time.sleep(0.5)
    out = proc.stdout.read() if proc.stdout else ""
    busy1, total1 = machine_busy()
    parts1 = components_cpu(groups or {})
    line = next((x for x in out.splitlines() if x.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{out}")
    figures: dict[str, Any] = json.loads(line)
    seconds = figures["duration_us"] / 1e6
    figures["requests_per_s"] = round(figures["requests"] / seconds, 1)
    figures["generator_cpu_s"] = round(cpu, 2)
    figures["per_core_requests_per_s"] = round(figures["requests"] / cpu, 1) if cpu else None
    figures["machine_busy_pct"] = round(100 * (busy1 - busy0) / (total1 - total0), 1)
    if groups and figures["requests"]:
        figures["cpu_ms_per_request"] = {
            g: round(1000 * (parts1[g] - parts0[g]) / figures["requests"], 3) for g in groups
        }
    figures["command"] = " ".join(command)
    return figures


def locust(
    url: str, path: str, tokens: list[str], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    locustfile = tmp / "reads.py"
    locustfile.write_text(textwrap.dedent(LOCUSTFILE))
    prefix = tmp / "locust"
    command = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(locustfile),
        "--headless",
        f"--users={args.connections}",
        f"--spawn-rate={args.connections}",
        f"--run-time={args.duration}s",
        f"--host={url}",
        f"--csv={prefix}",
        "--only-summary",
        "--loglevel=WARNING",
    ]
    env = {**os.environ, "BENCH_TOKENS": json.dumps(tokens), "BENCH_PATH": path}
    busy0, total0 = machine_busy()
    started = time.monotonic()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    cpu = 0.0
    while proc.poll() is None:
        cpu = max(cpu, tree_cpu(proc.pid))
        time.sleep(0.5)
    wall = time.monotonic() - started
    busy1, total1 = machine_busy()
    stats = prefix.with_name("locust_stats.csv")
    if not stats.exists():
        raise SystemExit(
            f"locust failed ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
        )
    header, *rows = [line.split(",") for line in stats.read_text().splitlines()]
    row = dict(
        zip(header, next(r for r in rows if r[1] == '"read"' or r[1] == "read"), strict=False)
    )
    requests = int(row["Request Count"])
    return {
        "requests": requests,
        "failures": int(row["Failure Count"]),
        "requests_per_s": round(float(row["Requests/s"]), 1),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "generator_cpu_s": round(cpu, 2),
        "per_core_requests_per_s": round(requests / cpu, 1) if cpu else None,
        "wall_s": round(wall, 1),
        "machine_busy_pct": round(100 * (busy1 - busy0) / (total1 - total0), 1),
        "command": " ".join(command),
    }


def profiled(
    url: str,
    read: str,
    tokens: list[str],
    args: argparse.Namespace,
    tmp: Path,
    *,
    groups: dict[str, list[int]],
) -> dict[str, Any]:
    """The API read again with py-spy on every API worker; where their samples go."""
    spies = py_spy(groups["api"], args.duration, tmp)
    figures = wrk(url, read, tokens, args, tmp, groups=groups)
    figures["profile"] = {}
    for out, proc in spies:
        proc.wait(timeout=60)
        if out.exists():
            figures["profile"][out.stem] = summary = summarise_profile(out)
            print(f"py-spy {out.stem}, {summary.get('samples', 0)} samples, by component:")
            for component, share in summary["components"]:
                print(f"  {share:5.1f} %  {component}")
    shown = {k: v for k, v in figures.items() if k not in ("command", "profile")}
    print(f"profile step (wrk_api_read under py-spy): {shown}", flush=True)
    return figures


def world(chat: ChatClient, admin_key: str, users: int) -> tuple[str, list[str]]:
    created = expect(chat.as_admin(admin_key).post("/v1/apps", {"name": "bench-http"}), 201)
    backend = chat.as_app(created["api_key"])
    tokens = [
        str(expect(backend.post("/v1/tokens", {"user_id": f"u{i}"}), 201)["access_token"])
        for i in range(users)
    ]
    owner = chat.as_user(tokens[0])
    channel = expect(owner.post("/v1/channels", {"name": "bench", "kind": "public"}), 201)
    channel_id = channel["channel_id"]
    ids = [f"u{i}" for i in range(1, users)]
    for i in range(0, len(ids), 100):
        expect(
            owner.post(f"/v1/channels/{channel_id}/members", {"user_ids": ids[i : i + 100]}), 200
        )
    for n in range(PAGE):
        expect(owner.post(f"/v1/channels/{channel_id}/messages", {"text": f"history {n:03d}"}), 201)
    return channel_id, tokens


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement (15)")
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk connections / Locust users (64)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--users", type=int, default=64, help="bearer tokens to rotate over (64)")
    parser.add_argument("--workers", type=int, default=2, help="API workers (2)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--profile", action="store_true", help="an extra API-read step under py-spy"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    report: dict[str, Any] = {
        "environment": environment(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    options = NativeOptions(workers=args.workers, api_rate_per_s=1_000_000, ws_rate_per_s=10_000)
    target = NativeTarget(options)
    with target as info, tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        chat = ChatClient.for_target(info)
        channel_id, tokens = world(chat, info.admin_key, args.users)
        read = f"/v1/channels/{channel_id}/messages?limit={PAGE}"
        groups = component_pids(target)
        url = info.edge.url
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "wrk_static_nginx": lambda: wrk(url, STATIC_PATH, [], args, Path(tmp), groups=groups),
            "wrk_api_read": lambda: wrk(url, read, tokens, args, Path(tmp), groups=groups),
            "locust_api_read": lambda: locust(url, read, tokens, args, Path(tmp)),
        }
        for name, step in steps.items():
            figures = step()
            report[name] = figures
            shown = {k: v for k, v in figures.items() if k != "command"}
            print(f"{name}: {shown}", flush=True)
        if args.profile:
            report["profile_step"] = profiled(url, read, tokens, args, Path(tmp), groups=groups)
    api, static, loc = report["wrk_api_read"], report["wrk_static_nginx"], report["locust_api_read"]
    report["ratios"] = {
        "api_over_static_nginx": round(api["requests_per_s"] / static["requests_per_s"], 3),
        "locust_per_core_over_wrk_per_core": (
            round(loc["per_core_requests_per_s"] / api["per_core_requests_per_s"], 3)
            if loc["per_core_requests_per_s"] and api["per_core_requests_per_s"]
            else None
        ),
    }
    print(f"ratios: {report['ratios']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
