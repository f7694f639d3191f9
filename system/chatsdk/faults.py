"""Test-only fault injection: deliberately broken behaviours that preflight's own tests switch on
to show that its drills catch them (tests/drills/test_fault_variants.py). Nothing is injected
unless CHATSDK_FAULTS names a fault; never set it in a deployment.

- `exit_on_sigterm`: no SIGTERM handler, so SIGTERM ends the worker at once (Python's default):
  no readiness 503, in-flight requests cut off, sockets dropped without a close frame.
- `quit_on_sigterm`: SIGTERM ends the worker at once with exit code 0, without a drain: no
  readiness 503, in-flight requests cut off, sockets dropped. Its exit code looks clean; only
  what clients saw gives it away.
- `ack_before_commit`: a message send answers 201 while its transaction is still open and
  commits ACK_BEFORE_COMMIT_DELAY_S later, so a crash in between loses an acknowledged message.
- `no_rate_limits`: the per-user token buckets let everything through (TST-RATELIMIT's defect).
- `no_ws_frame_limit`: a realtime socket may send any number of frames per second (the 50/s
  flood limit of realtime.py is off; SEC-WS-FRAME-RATE's defect).
- `unbounded_db_waits`: PostgreSQL connections have no bound of their own (asyncpg's 60 s
  connect timeout, no statement timeout, no TCP_USER_TIMEOUT): across a network partition a
  statement on a pooled connection, and a new connection's SYN, wait until the client gives up.
- `unbounded_redis_waits`: the Redis client has no socket timeouts: across a network partition
  every command waits until the client gives up.
- `status_always_up`: GET /v1/status reports every component up whatever it sees: a status page
  that lies during an incident.
- `unsigned_webhooks`: webhook deliveries go out without X-ChatSDK-Signature, so a receiver
  cannot tell them from forged ones (TST-WEBHOOKS' defect).
- `lenient_bodies`: JSON bodies keep fields their spec does not know instead of refusing them
  (400 unknown_field), so the API accepts what its OpenAPI document forbids (TST-API-CONTRACT's
  defect).
- `ready_without_database`: readiness does not check PostgreSQL, so a worker that lost its
  database stays ready and keeps taking requests it can only fail (OPS-DB-LOSS's defect).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from chatsdk.errors import SettingsError

VARIABLE = "CHATSDK_FAULTS"
EXIT_ON_SIGTERM = "exit_on_sigterm"
QUIT_ON_SIGTERM = "quit_on_sigterm"
ACK_BEFORE_COMMIT = "ack_before_commit"
NO_RATE_LIMITS = "no_rate_limits"
NO_WS_FRAME_LIMIT = "no_ws_frame_limit"
UNBOUNDED_DB_WAITS = "unbounded_db_waits"
UNBOUNDED_REDIS_WAITS = "unbounded_redis_waits"
STATUS_ALWAYS_UP = "status_always_up"
UNSIGNED_WEBHOOKS = "unsigned_webhooks"
LENIENT_BODIES = "lenient_bodies"
READY_WITHOUT_DATABASE = "ready_without_database"
KNOWN = frozenset(
    {
        EXIT_ON_SIGTERM,
        QUIT_ON_SIGTERM,
        ACK_BEFORE_COMMIT,
        NO_RATE_LIMITS,
        NO_WS_FRAME_LIMIT,
        UNBOUNDED_DB_WAITS,
        UNBOUNDED_REDIS_WAITS,
        STATUS_ALWAYS_UP,
        UNSIGNED_WEBHOOKS,
        LENIENT_BODIES,
        READY_WITHOUT_DATABASE,
    }
)
ACK_BEFORE_COMMIT_DELAY_S = 0.5


def parse(environ: Mapping[str, str]) -> frozenset[str]:
    """The faults CHATSDK_FAULTS names (comma-separated); an unknown name is a settings error."""
    names = frozenset(n.strip() for n in environ.get(VARIABLE, "").split(",") if n.strip())
    unknown = sorted(names - KNOWN)
    if unknown:
        raise SettingsError(
            f"{VARIABLE} names unknown faults {unknown} (known: {', '.join(sorted(KNOWN))})"
        )
    return names


@cache
def active() -> frozenset[str]:
    return parse(os.environ)


def injected(name: str) -> bool:
    return name in active()
