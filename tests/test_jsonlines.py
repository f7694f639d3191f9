"""The JSON-lines log reader: the objects of a log, each with its file, and nothing else."""

from __future__ import annotations

from pathlib import Path

from preflight.jsonlines import json_object, json_records


def test_only_json_objects_on_a_line_of_their_own_count() -> None:
    assert json_object('{"msg": "started", "worker_id": "0"}') == {
        "msg": "started",
        "worker_id": "0",
    }
    assert json_object("2026/11/25 20:15:00 [notice] 1#1: start worker processes") is None
    assert json_object('{"msg": "cut sho') is None
    assert json_object("[1, 2]") is None
    assert json_object("") is None


def test_every_file_is_read_in_order_and_one_not_written_yet_holds_none(tmp_path: Path) -> None:
    api, edge = tmp_path / "api-0.log", tmp_path / "access.log"
    api.write_text('starting\n{"msg": "a"}\n{"msg": "b"}\n\n')
    edge.write_text('{"uri": "/"}\n{"uri": \n')
    found = list(json_records([api, tmp_path / "not-yet.log", edge]))
    assert found == [(api, {"msg": "a"}), (api, {"msg": "b"}), (edge, {"uri": "/"})]
