"""The database's part in performance: indexes behind foreign keys, query statistics, and the
slowest statements they reveal."""

from __future__ import annotations

import asyncpg
import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# Foreign keys of the application's schema whose columns are not the leading columns of an index:
# deleting or updating a parent row then scans the whole child table.
UNINDEXED_FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text AS tbl, c.conname AS fk,
       array_agg(a.attname::text ORDER BY k.ord) AS cols
  FROM pg_constraint c
  CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
 WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
   AND NOT EXISTS (
         SELECT 1 FROM pg_index i
          WHERE i.indrelid = c.conrelid
            -- a partial index on "fk IS NOT NULL" serves every lookup by a key value
            AND (i.indpred IS NULL
                 OR (cardinality(c.conkey) = 1
                     AND pg_get_expr(i.indpred, i.indrelid) = format('(%I IS NOT NULL)',
                         (SELECT attname FROM pg_attribute
                           WHERE attrelid = c.conrelid AND attnum = c.conkey[1]))))
            AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(c.conkey)]
                @> c.conkey
            AND c.conkey
                @> (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(c.conkey)])
 GROUP BY 1, 2 ORDER BY 1, 2
"""
# The application role's statements (the only ones whose text it may read), the statistics
# views' own queries left out.
APP_STATEMENTS = """
SELECT s.queryid, s.calls, s.mean_exec_time, s.total_exec_time,
       regexp_replace(left(s.query, 160), '\\s+', ' ', 'g') AS query
  FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
 WHERE r.rolname = current_user AND s.query NOT ILIKE '%pg_stat_statements%'
"""
HOT_CALLS = 5  # a statement the application ran at least this often is on a hot path
MAX_MEAN_MS = 50.0
TOP = 10
STATISTICS_MISSING = (
    asyncpg.UndefinedTableError,  # the extension is not installed in the database
    asyncpg.ObjectNotInPrerequisiteStateError,  # ... or not loaded by shared_preload_libraries
)


def app_statements(target: ProbeTarget) -> list[asyncpg.Record]:
    """The application's statement statistics; a failed assertion when none are collected."""
    __tracebackhide__ = True
    where = target.pg.where
    try:
        rows = target.pg.fetch(APP_STATEMENTS)
    except STATISTICS_MISSING as exc:
        pytest.fail(
            f"PostgreSQL at {where} must collect query statistics with pg_stat_statements "
            f"(got {type(exc).__name__}: {str(exc).splitlines()[0]})",
            pytrace=False,
        )
    assert rows, f"pg_stat_statements at {where} must hold the application's statements (none)"
    return rows


@pytest.mark.checklist("PERF-DB-INDEXES")
def test_every_foreign_key_is_indexed(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A missing index turns a hot query into a sequential scan under load."""
    rows = target.pg.fetch(UNINDEXED_FOREIGN_KEYS)
    total = target.pg.fetch(
        "SELECT count(*) AS n FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
    )[0]["n"]
    evidence.figure("foreign keys", total)
    evidence.figure("foreign keys without an index", len(rows))
    missing = [f"{r['tbl']}({', '.join(r['cols'])})" for r in rows]
    assert total > 0, f"the schema at {target.pg.where} has no foreign key to judge"
    assert not missing, (
        f"every foreign key at {target.pg.where} must lead an index "
        f"(unindexed: {'; '.join(missing)})"
    )


@pytest.mark.checklist("PERF-DB-SLOW-QUERIES")
def test_hot_queries_average_under_50_ms(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Slow queries dominate latency and are invisible without statistics."""
    rows = app_statements(target)
    hot = [r for r in rows if r["calls"] >= HOT_CALLS]
    evidence.figure("statements with statistics", len(rows))
    evidence.figure("hot statements", len(hot))
    if hot:
        worst = max(hot, key=lambda r: r["mean_exec_time"])
        evidence.figure("slowest hot statement mean", round(worst["mean_exec_time"], 3), "ms")
    slow = [r for r in hot if r["mean_exec_time"] > MAX_MEAN_MS]
    assert not slow, (
        f"hot statements at {target.pg.where} must average <= {MAX_MEAN_MS:.0f} ms (got "
        + "; ".join(f"{r['mean_exec_time']:.0f} ms for {r['query']!r}" for r in slow[:3])
        + ")"
    )


@pytest.mark.checklist("POST-OPTIMISE-FIND")
def test_slowest_queries_are_listed(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Optimisation without measurements targets the wrong code."""
    rows = sorted(app_statements(target), key=lambda r: r["total_exec_time"], reverse=True)
    lines = [
        f"{r['total_exec_time']:10.1f} ms total {r['calls']:8d} calls "
        f"{r['mean_exec_time']:8.2f} ms mean  {r['query']}"
        for r in rows[:TOP]
    ]
    evidence.attach("slowest-statements.txt", "\n".join(lines) + "\n")
    evidence.figure("statements listed", len(lines))
