"""The bounded operation label of db_query_duration_seconds (chatsdk/dbtiming.py)."""

from __future__ import annotations

import pytest
from chatsdk.dbtiming import operation_of
from chatsdk.messages import SEND_SQL


@pytest.mark.parametrize(
    ("sql", "label"),
    [
        ("SELECT * FROM messages WHERE id = $1", "select messages"),
        ("insert into outbox (a) values ($1)", "insert outbox"),
        ("UPDATE channels SET last_seq = last_seq + 1", "update channels"),
        ("DELETE FROM uploads WHERE id = $1", "delete uploads"),
        ("BEGIN;", "begin"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "with"),
        ("VACUUM messages", "other"),
    ],
)
def test_statements_are_named_by_verb_and_first_table(sql: str, label: str) -> None:
    assert operation_of(sql) == label


def test_the_one_statement_send_is_named_after_its_first_write() -> None:
    assert operation_of(SEND_SQL) == "with update channels"
