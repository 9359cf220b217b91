"""WebSocket text frames as livegate writes them on an open connection (RFC 6455 §5.2).

Every audio chunk's round trip writes two: the append's `realtimeInput` to Gemini (a client's frame, masked)
and the audio delta to the client (a server's frame). websockets builds each through its general `Frame`: a
dataclass, its check, the extensions loop, a BytesIO, and a system call for each 4-byte masking key. Here a
frame is its header and its payload, and the masking keys come from the OS's randomness read 4 KB at a time
(RFC 6455 §10.3 asks for keys a peer cannot predict, which they stay; not for a system call each).

Only final, uncompressed text frames on a connection with no extension negotiated: the callers check that,
and leave every other case (a fragment, a close, permessage-deflate) to websockets.
"""

from __future__ import annotations

import os
import struct

from websockets.frames import apply_mask  # websockets' C speedup where it is built

_TEXT = 0x81  # FIN + opcode 1 (text)
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
