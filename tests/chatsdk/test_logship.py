"""chatsdk's shipping of its JSON lines to a central log store (chatsdk/logship.py), received by
a real TCP listener: octet-counted RFC 5424 frames carrying the redacted line, and a store that
is away neither blocks nor breaks the worker's logging."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator

import pytest
from chatsdk.logs import JsonFormatter, Redactor
from chatsdk.logship import Shipper
from chatsdk.settings import parse_server


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    yield server
    server.close()


def read_frame(conn: socket.socket) -> bytes:
    """One octet-counted frame (RFC 6587): `LENGTH SP MESSAGE`."""
    head = b""
    while not head.endswith(b" "):
        head += conn.recv(1)
    size, body = int(head), b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    return body


@contextlib.contextmanager
def shipping(
    port: int, name: str, formatter: logging.Formatter | None = None
) -> Iterator[logging.Logger]:
    """A logger of its own whose lines a started Shipper sends to 127.0.0.1:`port`; stopped
    (what it buffered shipped) on the way out."""
    shipper = Shipper(f"127.0.0.1:{port}", formatter or JsonFormatter("w7"))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(shipper.handler)
    shipper.start()
    try:
        yield logger
    finally:
        shipper.stop()
        logger.removeHandler(shipper.handler)


def received(listener: socket.socket, count: int) -> list[str]:
    """The first `count` messages of the first connection to `listener`."""
    conn, _addr = listener.accept()
    with conn:
        conn.settimeout(10)
        return [read_frame(conn).decode() for _ in range(count)]


def test_a_line_arrives_as_an_rfc5424_message_with_the_json_record(
    listener: socket.socket,
) -> None:
    formatter = JsonFormatter("w7", Redactor(["s3cret-value-123"]))
    with shipping(listener.getsockname()[1], "test.logship", formatter) as logger:
        logger.warning("hello %s", "s3cret-value-123", extra={"request_id": "r-1"})
        (message,) = received(listener, 1)
    header, _sep, line = message.partition(" - - ")
    pri_version, _stamp, _host, app, _pid = header.split(" ")
    assert (pri_version, app) == ("<132>1", "chatsdk"), header  # local0.warning, RFC 5424
    record = json.loads(line)
    assert record["request_id"] == "r-1"
    assert record["msg"] == "hello [redacted]"
    assert record["worker_id"] == "w7"


def test_a_store_that_is_away_loses_the_line_without_raising() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with shipping(port, "test.logship.away") as logger:
            logger.error("nobody listens")


def test_a_burst_of_lines_arrives_whole_and_in_order(listener: socket.socket) -> None:
    """Lines are shipped in batches, each still its own message, none lost or reordered."""
    with shipping(listener.getsockname()[1], "test.logship.burst") as logger:
        for n in range(500):
            logger.warning("line %d", n)
        messages = received(listener, 500)
    lines = [json.loads(m.partition(" - - ")[2])["msg"] for m in messages]
    assert lines == [f"line {n}" for n in range(500)]


def test_the_handlers_after_the_shipper_still_see_the_exception() -> None:
    """Error tracking reads the record's exc_info after the shipper has queued it."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        shipper = Shipper(f"127.0.0.1:{probe.getsockname()[1]}", JsonFormatter("w7"))
        logger = logging.getLogger("test.logship.exc")
        logger.propagate = False
        keep = Keep()
        for handler in (shipper.handler, keep):
            logger.addHandler(handler)
        try:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        finally:
            for handler in (shipper.handler, keep):
                logger.removeHandler(handler)
    (record,) = seen
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


@pytest.mark.parametrize("raw", ["logstore", ":5514", "logstore:port", "logstore:70000"])
def test_a_server_must_be_host_and_port(raw: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_server(raw)
