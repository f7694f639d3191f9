"""The frame-header follower behind StrictWebSocketResponse: it finds the first client frame
without a mask wherever the stream is cut into chunks, and passes masked frames of every
payload-length form."""

from __future__ import annotations

import os
import struct

import pytest
from chatsdk.wsframes import FrameHeaders


def frame(payload: bytes, *, mask: bool = True, opcode: int = 0x1) -> bytes:
    n, flag = len(payload), 0x80 if mask else 0
    if n < 126:
        head = bytes([0x80 | opcode, flag | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, flag | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, flag | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


MASKED = frame(b"a" * 5) + frame(b"b" * 300) + frame(b"c" * 70_000) + frame(b"", opcode=0x9)


def first_unmasked(stream: bytes, chunk: int) -> int | None:
    """The stream offset FrameHeaders reports, feeding it `chunk` bytes at a time."""
    headers = FrameHeaders()
    for start in range(0, len(stream), chunk):
        at = headers.first_unmasked(stream[start : start + chunk])
        if at is not None:
            return start + at
    return None


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096, 1 << 20])
def test_masked_frames_pass_however_the_stream_is_cut(chunk: int) -> None:
    assert first_unmasked(MASKED, chunk) is None


@pytest.mark.parametrize("chunk", [1 << 20, 4096, 3])
def test_an_unmasked_frame_is_found_where_it_starts(chunk: int) -> None:
    found = first_unmasked(MASKED + frame(b'{"type":"ping"}', mask=False), chunk)
    # Its first header byte; or, when that byte came in the chunk before (then already passed
    # on, half a header), the start of the chunk with its second.
    assert found in (len(MASKED), len(MASKED) + 1)
    if chunk > 2:
        assert found == len(MASKED) or len(MASKED) % chunk == chunk - 1


def test_an_unmasked_frame_first_is_found_at_once() -> None:
    assert FrameHeaders().first_unmasked(frame(b"x", mask=False)) == 0
