"""The synchronous replication guard (system/deploy/images/postgres/sync-guard.sh), as the native
target runs it beside its pair: every commit waits for the streaming standby, and losing the
standby never stops writes: while none streams the guard turns the wait off, and back on once
the standby streams again."""

from __future__ import annotations

from preflight.polling import until
from preflight.targets.native.standby import GUARD
from tests.checks.support import native, native_primary, primary_sql

SETTING = "SELECT current_setting('synchronous_standby_names')"
SYNC_STATE = "SELECT coalesce(string_agg(sync_state, ','), 'none') FROM pg_stat_replication"


def test_the_guard_turns_the_wait_off_while_the_standby_is_down_and_on_once_it_streams() -> None:
    with native() as info:
        sql = primary_sql(info)
        standby = info.drills.control["postgres-standby"]
        before = (sql(SETTING), sql(SYNC_STATE))
        standby.stop()
        # A write on the primary with its standby gone: it returns (psql would wait forever
        # for a standby that is not there if nothing turned the wait off).
        sql("CREATE TABLE guard_check (n int); INSERT INTO guard_check VALUES (1)")
        while_down = (sql(SETTING), sql(SYNC_STATE))
        standby.start()
        back = until(lambda: sql(SYNC_STATE) == "quorum", 30, interval=0.2)
        sql("INSERT INTO guard_check VALUES (2)")
        rows = sql("SELECT count(*) FROM guard_check")
        log = (native_primary(info).logs / f"{GUARD}.log").read_text()
    assert before == ("ANY 1 (*)", "quorum"), before
    assert while_down == ("", "none"), while_down
    assert back, "the guard turns the wait on again once the standby streams"
    assert rows == "2"
    assert "0 standby streaming: synchronous_standby_names = ''" in log, log
    assert "1 standby streaming: synchronous_standby_names = 'ANY 1 (*)'" in log, log
