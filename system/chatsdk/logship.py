"""Shipping of the worker's JSON log lines to the central log store (CHATSDK_LOG_SERVER).

Each line goes as one RFC 5424 syslog message over TCP with octet-counting framing (RFC 6587),
APP-NAME `chatsdk`, so the store (rsyslog's imtcp; system/docs/operations/logs.md) keeps it as
one event. The network never blocks a request: records wait in a bounded queue that a thread
of their own sends; the connection is opened again after a failure, and while the store is away
the newest records are dropped once the queue is full (the local stderr lines stay whole).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import logging.handlers
import os
import queue
import socket

from chatsdk.settings import parse_server

APP_NAME = "chatsdk"
QUEUE_SIZE = 10_000
CONNECT_TIMEOUT_S = 2.0
FACILITY_LOCAL0 = 16
SEVERITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def frame(record: logging.LogRecord, line: str, hostname: str) -> bytes:
    """One octet-counted RFC 5424 message carrying `line`."""
    stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="microseconds")
    pri = FACILITY_LOCAL0 * 8 + SEVERITY.get(record.levelname, 5)
    message = f"<{pri}>1 {stamp.replace('+00:00', 'Z')} {hostname} {APP_NAME} {os.getpid()} - - "
    body = message.encode() + line.encode("utf-8", errors="replace")
    return f"{len(body)} ".encode() + body


class SyslogTcpHandler(logging.Handler):
    """Sends each formatted record to (host, port); called from the shipping thread only."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.address = (host, port)
        self.hostname = socket.gethostname() or "-"
        self._sock: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        data = frame(record, self.format(record), self.hostname)
        for _attempt in range(2):  # a connection the store closed is noticed on the first send
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(self.address, CONNECT_TIMEOUT_S)
                self._sock.sendall(data)
                return
            except OSError:
                self.close_socket()
        # The store is away: this record is lost to it (stderr still has it).

    def close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self.close_socket()
        super().close()


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that drops a record when the queue is full instead of blocking."""

    def enqueue(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Format here, in the caller's context: the formatter reads the request's context vars.
        # A copy is queued: the handlers after this one (error tracking reads exc_info) must see
        # the record as it was logged.
        shipped = copy.copy(record)
        shipped.msg = self.format(record)
        shipped.args = None
        shipped.exc_info = None
        shipped.exc_text = None
        return shipped


class Shipper:
    """The handler to add to the root logger, and the thread that ships what it queues."""

    def __init__(self, server: str, formatter: logging.Formatter) -> None:
        host, port = parse_server(server)
        records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
        self.handler = _DroppingQueueHandler(records)
        self.handler.setFormatter(formatter)
        self._sender = SyslogTcpHandler(host, port)
        self._sender.setFormatter(logging.Formatter("%(message)s"))
        self._listener = logging.handlers.QueueListener(records, self._sender)

    def start(self) -> None:
        self._listener.start()

    def stop(self) -> None:
        """Ship what is queued, then close the connection."""
        self._listener.stop()
        self._sender.close()
