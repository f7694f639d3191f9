"""db_query_duration_seconds{operation} for every statement, without touching the handlers.

The PostgreSQL pool is created with `connection_class=timed_connection_class(histogram)`: each
execute/fetch/fetchrow/fetchval/executemany (also the BEGIN/COMMIT of `conn.transaction()`) is
timed and labelled with a bounded operation name taken from the SQL text, the verb and the first
table: "select messages", "insert messages", "update channels", "begin", "commit" (a WITH
statement after its first write: "with update channels"). SQL texts are
code constants, so the label set is bounded by verbs x tables.

Handlers that want to time a whole unit of work can also use `timed(metrics, "send_message")`.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
from prometheus_client import Histogram

from chatsdk.metrics import Metrics
from chatsdk.sessionreset import MarkableConnection

VERBS = frozenset(
    {"select", "insert", "update", "delete", "with", "begin", "commit", "rollback", "copy"}
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE_AFTER = {
    "select": re.compile(r"\bfrom\s+([a-z_][a-z0-9_]*)", re.IGNORECASE),
    "delete": re.compile(r"\bfrom\s+([a-z_][a-z0-9_]*)", re.IGNORECASE),
    "insert": re.compile(r"\binto\s+([a-z_][a-z0-9_]*)", re.IGNORECASE),
    "update": re.compile(r"^\s*update\s+([a-z_][a-z0-9_]*)", re.IGNORECASE),
}
MAX_TABLE_LEN = 40


# A data-modifying WITH statement (the one-statement send) is named after its first write.
_FIRST_WRITE = re.compile(
    r"\b(update|insert\s+into|delete\s+from)\s+([a-z_][a-z0-9_]*)", re.IGNORECASE
)


@functools.lru_cache(maxsize=1024)
def operation_of(sql: str) -> str:
    first = _WORD.search(sql)
    verb = first.group(0).lower() if first else "other"
    if verb not in VERBS:
        return "other"
    if verb == "with":
        write = _FIRST_WRITE.search(sql)
        if write is None:
            return "with"
        return f"with {write.group(1).split()[0].lower()} {write.group(2).lower()[:MAX_TABLE_LEN]}"
    pattern = _TABLE_AFTER.get(verb)
    if pattern is None:
        return verb
    table = pattern.search(sql)
    if table is None:
        return verb
    return f"{verb} {table.group(1).lower()[:MAX_TABLE_LEN]}"


def timed_connection_class(histogram: Histogram) -> type[asyncpg.Connection]:
    """An asyncpg Connection subclass that observes each statement's duration in `histogram`."""

    class TimedConnection(MarkableConnection):
        def _observe(self, sql: str, started: float) -> None:
            histogram.labels(operation_of(sql)).observe(time.perf_counter() - started)

        async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().execute(query, *args, **kwargs)
            finally:
                self._observe(query, started)

        async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().executemany(command, args, **kwargs)
            finally:
                self._observe(command, started)

        async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().fetch(query, *args, **kwargs)
            finally:
                self._observe(query, started)

        async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().fetchrow(query, *args, **kwargs)
            finally:
                self._observe(query, started)

        async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().fetchval(query, *args, **kwargs)
            finally:
                self._observe(query, started)

    return TimedConnection


@contextlib.contextmanager
def timed(metrics: Metrics, operation: str) -> Iterator[None]:
    """Time a unit of work (several statements) under its own operation name."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.db_query_duration.labels(operation).observe(time.perf_counter() - started)
