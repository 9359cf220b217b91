"""WebSocket frames as livegate writes and reads them on an open connection (RFC 6455 §5.2).

Every audio chunk's round trip writes two: the append's `realtimeInput` to Gemini (a client's frame, masked)
and the audio delta to the client (a server's frame). websockets builds each through its general `Frame`: a
dataclass, its check, the extensions loop, a BytesIO, and a system call for each 4-byte masking key. Here a
frame is its header and its payload, and the masking keys come from the OS's randomness read 4 KB at a time
(RFC 6455 §10.3 asks for keys a peer cannot predict, which they stay; not for a system call each).

Only final, uncompressed text frames on a connection with no extension negotiated: the callers check that,
and leave every other case (a fragment, a close, permessage-deflate) to websockets.

Reading (`FrameReader`) is the same shortcut the other way: the whole, final, unfragmented text and binary
frames at the start of what a socket read are parsed in place and handed over, where websockets' parser
runs a generator per frame, a dataclass and its checks (about four times the cost). Everything else (a
control frame, a fragment, a frame cut by the read, a declined message) goes on to websockets' parser, and
the reader follows the stream's frame boundaries through it, so it parses only from where a frame begins.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

from websockets.frames import apply_mask  # websockets' C speedup where it is built

_TEXT = 0x81  # FIN + opcode 1 (text)
_BINARY = 0x82  # FIN + opcode 2 (binary)
_MASKED = 0x80
_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack
_KEY_POOL_BYTES = 4096


def _head(length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((_TEXT, mask_bit | length))
    if length < 65536:
        return _HEAD16(_TEXT, mask_bit | 126, length)
    return _HEAD64(_TEXT, mask_bit | 127, length)


def server_text(payload: bytes) -> bytes:
    """A text frame as a server sends it (unmasked); `payload` is UTF-8."""
    return _head(len(payload), 0) + payload


class MaskKeys:
    """Masking keys for the frames a client sends: 4 bytes each of the OS's randomness, read 4 KB at a time."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Drop the keys read so far (a forked child must not use its parent's)."""
        self._pool = b""
        self._at = 0

    def take(self) -> bytes:
        at = self._at
        if at + 4 > len(self._pool):
            self._pool, at = os.urandom(_KEY_POOL_BYTES), 0
        self._at = at + 4
        return self._pool[at:at + 4]


_KEYS = MaskKeys()
os.register_at_fork(after_in_child=_KEYS.forget)  # a forked worker never reuses its parent's keys


def client_text(payload: bytes) -> bytes:
    """A text frame as a client sends it (masked with a fresh key); `payload` is UTF-8."""
    key = _KEYS.take()
    return _head(len(payload), _MASKED) + key + apply_mask(payload, key)


class FrameReader:
    """Whole data frames read from the start of a socket's data (`take`), and where frames begin in the data
    left to websockets (`skip`). `masked`: the peer is a client (its frames must be masked)."""

    __slots__ = ("_fragmented", "_head", "_left", "_mask_bit", "_max_size")

    def __init__(self, *, masked: bool, protocol: Any) -> None:
        self._mask_bit = _MASKED if masked else 0
        # a larger frame is websockets' to refuse (1009); `max_message_size` since websockets 16
        self._max_size: int | None = getattr(protocol, "max_message_size", getattr(protocol, "max_size", None))
        self._left = 0  # bytes of a frame begun in data already skipped
        self._head = b""  # the start of a header cut by the end of the data skipped
        self._fragmented = False  # a fragmented message's continuation frames are still to come

    @property
    def at_frame(self) -> bool:
        """The next byte begins a frame outside any fragmented message (what `take` may read from)."""
        return not self._left and not self._head and not self._fragmented

    def take(self, data: bytes, deliver: Callable[[str | bytes], bool]) -> int:
        """Hand over the whole final text (str) and binary (bytes) frames at the start of `data` until one is
        declined or is not one of those; returns how many bytes were taken (the rest is websockets'). Call it
        only `at_frame`."""
        at, end, mask_bit, max_size = 0, len(data), self._mask_bit, self._max_size
        while at + 2 <= end:
            opcode, second = data[at], data[at + 1]
            if (opcode != _TEXT and opcode != _BINARY) or second & _MASKED != mask_bit:
                break
            length, start = second & 0x7F, at + 2
            if length == 126:
                length, start = int.from_bytes(data[start:start + 2]), start + 2
            elif length == 127:
                length, start = int.from_bytes(data[start:start + 8]), start + 8
            stop = start + length + (4 if mask_bit else 0)
            if stop > end or (max_size is not None and length > max_size):
                break
            payload = data[stop - length:stop]
            if mask_bit:
                payload = apply_mask(payload, data[start:start + 4])
            message = message_of(payload, text=opcode == _TEXT)
            if message is None or not deliver(message):  # (not UTF-8: websockets' parser closes with 1007)
                break
            at = stop
        return at

    def read(self, data: bytes, deliver: Callable[[str | bytes], bool] | None) -> bytes:
        """Hand over the whole frames `take` can (at a frame, with a `deliver` that may take them now) and
        follow the rest: returns what is left for websockets' parser (empty when all was taken)."""
        if deliver is not None and self.at_frame:
            taken = self.take(data, deliver)
            if taken:
                data = data[taken:]
        if data:
            self.skip(data)
        return data

    def skip(self, data: bytes) -> None:
        """`data` goes to websockets' parser: follow where its frames begin and end."""
        if self._head:
            data, self._head = self._head + data, b""
        elif self._left:
            if len(data) <= self._left:
                self._left -= len(data)
                return
            data, self._left = data[self._left:], 0
        at, end = 0, len(data)
        while at < end:
            size = _frame_size(data, at)
            if size is None:
                self._head = data[at:]
                return
            first = data[at]
            if first & 0x0F in (1, 2):  # text, binary: a fragmented message begins unless final
                self._fragmented = not first & 0x80
            elif first & 0x0F == 0 and first & 0x80:  # its final continuation
                self._fragmented = False
            at += size
        self._left = at - end


def message_of(payload: bytes, *, text: bool) -> str | bytes | None:
    """A data message as a session takes it: text as str, binary as bytes; None for text that is not UTF-8
    (websockets' and uvicorn's own paths close the connection with 1007)."""
    if not text:
        return payload
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return None


def _frame_size(data: bytes, at: int) -> int | None:
    """The size of the frame beginning at `data[at]` (header, key, payload); None when its header is cut."""
    end = len(data)
    if at + 2 > end:
        return None
    second = data[at + 1]
    length, head = second & 0x7F, 2
    if length == 126:
        head = 4
    elif length == 127:
        head = 10
    if at + head > end:
        return None
    if head > 2:
        length = int.from_bytes(data[at + 2:at + head])
    return head + (4 if second & _MASKED else 0) + length


def opened_at_frame(data: bytes, framed: bool, buffered: bytes | bytearray) -> bool:
    """After the read `data` that completed a connection's opening handshake: whether the next byte begins a
    frame, i.e. the handshake's head ended this read (no frame was parsed from it, nothing is buffered).
    A peer that sent frames before the handshake's answer is left to websockets' parser throughout."""
    return data.endswith(b"\r\n\r\n") and not framed and not buffered
