"""The load stage: a load profile against the target, and the figures its load items are decided
on.

- `runner`: what runs the stage (the LoadRunner signature) and the runner of `--no-load`.
- `locust`: runs Locust headless in its own processes and collects what it recorded, sampling
  the target alongside.
- `series`, `guards`, `figures`: Locust's time series read; when a run stops early or is no
  evidence; the figures of one run.
- `headroom`, `apistats`: the target's components' CPU, memory and connections, and its API
  workers' own metrics, sampled during the run.
- `scaling`: the PERF-HSCALE step (all API workers against half of them).
- `derived`, `baseline`, `capacity`: figures derived after the run from more than the run
  itself: the p95 against an earlier record, the throughput against the production peak.
- `results`: LoadResults, what the stage hands to the decisions and the record.
"""

PROFILES = ("smoke", "release", "soak")  # the load profiles loadtests/locustfile.py defines
