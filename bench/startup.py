"""Start-up time of the native target: launch, wait for the edge to answer ready over TLS, stop.

    .venv/bin/python bench/startup.py --runs 5 --workers 2

Prints each run and the median; a benchmark, not a test (these machines are noisy)."""

from __future__ import annotations

import argparse
import statistics
import time

from preflight.targets.native import NativeOptions, NativeTarget


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ready, stop = [], []
    for i in range(args.runs):
        target = NativeTarget(NativeOptions(workers=args.workers))
        with target:
            assert target.started_in is not None
            ready.append(target.started_in)
            t0 = time.monotonic()
        stop.append(time.monotonic() - t0)
        print(f"run {i + 1}: ready in {ready[-1]:.2f} s, stopped in {stop[-1]:.2f} s", flush=True)
    print(
        f"native target, {args.workers} workers: ready median {statistics.median(ready):.2f} s "
        f"(min {min(ready):.2f}, max {max(ready):.2f}); stop median {statistics.median(stop):.2f} s"
    )


if __name__ == "__main__":
    main()
