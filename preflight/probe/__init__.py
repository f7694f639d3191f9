"""What probes are given: the `target` object (probe/target.py) and the clients it builds on
first use, one module a job: PostgreSQL (pg.py), Redis (redis.py), the log files (logs.py), the
API workers' /metrics and runtime reports (metrics.py) and the web client (web.py)."""
