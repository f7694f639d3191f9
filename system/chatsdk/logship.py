"""Shipping of the worker's JSON log lines to the central log store (CHATSDK_LOG_SERVER).

Each line goes as one RFC 5424 syslog message over TCP with octet-counting framing (RFC 6587),
APP-NAME `chatsdk`, so the store (rsyslog's imtcp; system/docs/operations/logs.md) keeps it as
one event. The network never blocks a request: each record is formatted where it is logged and
its line waits in a bounded buffer, which a thread of its own sends every FLUSH_INTERVAL_S in one
write (a thread woken per line cost the workers about 7 % of their CPU under load); the
connection is opened again after a failure, and while the store is away the newest lines are
dropped once the buffer is full (the local stderr lines stay whole).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import socket
import threading

from chatsdk.settings import parse_server

APP_NAME = "chatsdk"
QUEUE_SIZE = 10_000
FLUSH_INTERVAL_S = 0.2  # how long a line may wait before it is shipped
CONNECT_TIMEOUT_S = 2.0
FACILITY_LOCAL0 = 16
SEVERITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def frame(created: float, level: str, line: str, hostname: str) -> bytes:
    """One octet-counted RFC 5424 message carrying `line` (a record's time and level name)."""
    stamp = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="microseconds")
    pri = FACILITY_LOCAL0 * 8 + SEVERITY.get(level, 5)
    message = f"<{pri}>1 {stamp.replace('+00:00', 'Z')} {hostname} {APP_NAME} {os.getpid()} - - "
    body = message.encode() + line.encode("utf-8", errors="replace")
    return f"{len(body)} ".encode() + body


class SyslogTcpSender:
    """Writes framed messages to (host, port); used from the shipping thread only."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.hostname = socket.gethostname() or "-"
        self._sock: socket.socket | None = None

    def send(self, data: bytes) -> None:
        for _attempt in range(2):  # a connection the store closed is noticed on the first send
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(self.address, CONNECT_TIMEOUT_S)
                self._sock.sendall(data)
                return
            except OSError:
                self.close()
        # The store is away: these lines are lost to it (stderr still has them).

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _BatchingHandler(logging.Handler):
    """Formats each record in the caller's context (the formatter reads the request's context
    vars) and leaves the line in a buffer for the shipping thread: no lock taken, no thread
    woken per record, so a request pays only for the formatting. Once the buffer holds
    QUEUE_SIZE lines (the store away), the newest are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: collections.deque[tuple[float, str, str]] = collections.deque()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)
            return
        if len(self.lines) < QUEUE_SIZE:
            self.lines.append((record.created, record.levelname, line))


class Shipper:
    """The handler to add to the root logger, and the thread that ships what it buffers: every
    FLUSH_INTERVAL_S it sends all the lines waiting, as one write of octet-counted messages."""

    def __init__(self, server: str, formatter: logging.Formatter) -> None:
        host, port = parse_server(server)
        self.handler = _BatchingHandler()
        self.handler.setFormatter(formatter)
        self._sender = SyslogTcpSender(host, port)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ship what is buffered, then close the connection."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._flush()
        self._sender.close()

    def _run(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            self._flush()

    def _flush(self) -> None:
        lines = self.handler.lines
        batch = []
        while lines:
            created, level, line = lines.popleft()
            batch.append(frame(created, level, line, self._sender.hostname))
        if batch:
            self._sender.send(b"".join(batch))
