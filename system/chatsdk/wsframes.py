"""A WebSocket response that closes the socket with 1002 on a client frame without a mask.

RFC 6455 section 5.1: a client masks every frame it sends, and "the server MUST close the
connection upon receiving a frame that is not masked". aiohttp's frame reader unmasks what is
masked and takes the rest as it is, and has no setting to refuse it. So the reader is wrapped:
MaskedFramesOnly follows the client's byte stream frame by frame, reading only the headers
(2 to 14 bytes a frame; payloads are skipped by length, never copied), and passes the bytes on
to aiohttp's reader until a header without the mask bit arrives. The frames before it are
delivered; at that header the reader's queue gets the protocol error, and aiohttp answers it the
way it answers its own protocol errors: a close frame with 1002, then the end of the connection.

StrictWebSocketResponse installs the wrapper where aiohttp creates its reader, before the reader
is handed to the connection, so bytes that arrived together with the handshake are checked too.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WebSocketError, WSCloseCode, web

MASK_BIT = 0x80
LENGTH_BITS = 0x7F
LENGTH_16 = 126  # a 2-byte extended payload length follows
LENGTH_64 = 127  # an 8-byte one
MASK_KEY_SIZE = 4
UNMASKED = "Received a client frame without a mask (RFC 6455 section 5.1)"


def _header_size(head: bytearray) -> int:
    """Bytes in a masked frame's header, from its first two."""
    flag = head[1] & LENGTH_BITS
    extended = 2 if flag == LENGTH_16 else 8 if flag == LENGTH_64 else 0
    return 2 + extended + MASK_KEY_SIZE


def _payload_length(head: bytearray) -> int:
    flag = head[1] & LENGTH_BITS
    if flag == LENGTH_16:
        return int.from_bytes(head[2:4], "big")
    if flag == LENGTH_64:
        return int.from_bytes(head[2:10], "big")
    return flag


class FrameHeaders:
    """Frame boundaries in a client's byte stream, fed in chunks as they arrive."""

    def __init__(self) -> None:
        self._head = bytearray()  # the current frame's header bytes read so far
        self._skip = 0  # payload bytes of the current frame still to come

    def first_unmasked(self, data: bytes) -> int | None:
        """The offset in `data` of the first frame without a mask (0 when its header began in
        an earlier chunk), or None when every frame so far is masked."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            self._head.append(data[pos])
            pos += 1
            if len(self._head) < 2:
                continue
            if not self._head[1] & MASK_BIT:
                return max(0, pos - 2)
            if len(self._head) == _header_size(self._head):
                self._skip = _payload_length(self._head)
                self._head.clear()
        return None


class MaskedFramesOnly:
    """aiohttp's frame reader, behind a check that every client frame is masked."""

    def __init__(self, reader: Any, queue: Any) -> None:
        self._reader = reader  # aiohttp's WebSocketReader
        self._queue = queue  # its WebSocketDataQueue, which ws.receive() reads
        self._headers = FrameHeaders()
        self._failed = False

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        """As aiohttp's reader: (the connection is done, unused bytes)."""
        if self._failed:
            return True, b""
        chunk = bytes(data)
        at = self._headers.first_unmasked(chunk)
        if at is None:
            done: tuple[bool, bytes] = self._reader.feed_data(chunk)
            return done
        self._failed = True
        if at > 0:
            done = self._reader.feed_data(chunk[:at])
            if done[0]:
                return done
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED))
        return True, b""

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class StrictWebSocketResponse(web.WebSocketResponse):
    """web.WebSocketResponse whose frame reader refuses unmasked client frames with 1002.

    aiohttp assigns its new reader to `_parser` (after its queue to `_reader`) and then hands
    `_parser` to the connection; the property wraps it on assignment. tests/api/test_realtime.py
    sends an unmasked frame on a raw socket, so an aiohttp that stops doing this fails there."""

    _strict_parser: Any = None

    @property
    def _parser(self) -> Any:
        return self._strict_parser

    @_parser.setter
    def _parser(self, reader: Any) -> None:
        if reader is not None and not isinstance(reader, MaskedFramesOnly):
            reader = MaskedFramesOnly(reader, self._reader)
        self._strict_parser = reader
