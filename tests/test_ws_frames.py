"""livegate's own text frames (ws_frames.py) read back by websockets' parser, as the peer would read them."""

from __future__ import annotations

import pytest
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from livegate.ws_frames import MaskKeys, client_text, server_text


def _read(side: Side, data: bytes) -> list:
    peer = Protocol(side, state=State.OPEN, max_size=None)
    peer.receive_data(data)
    return peer.events_received()


# each length encoding (7-bit, 16-bit, 64-bit) at its edges, and multi-byte UTF-8
@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 300_001])
def test_frames_read_back_as_one_final_text_message(length: int) -> None:
    payload = ("é" * (length // 2) + "a" * (length % 2)).encode()
    assert len(payload) == length
    for side, frame in ((Side.CLIENT, server_text(payload)), (Side.SERVER, client_text(payload))):
        [event] = _read(side, frame)  # a client reads a server's frame; a server requires a masked one
        assert (event.opcode, event.fin, event.data) == (Opcode.TEXT, True, payload)


def test_a_server_refuses_an_unmasked_frame_so_client_frames_must_be_masked() -> None:
    peer = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    peer.receive_data(server_text(b"{}"))
    assert peer.events_received() == [] and peer.close_sent is not None and peer.close_sent.code == 1002


def test_several_frames_in_one_write_read_back_in_order() -> None:
    texts = [f'{{"n":{n}}}'.encode() for n in range(11)]
    assert [e.data for e in _read(Side.CLIENT, b"".join(server_text(t) for t in texts))] == texts


def test_mask_keys_are_fresh_across_pool_refills() -> None:
    keys = MaskKeys()
    taken = [keys.take() for _ in range(3000)]  # 12 KB: the 4 KB pool read three times
    assert all(len(key) == 4 for key in taken)
    assert len(set(taken)) > 2990  # 32 random bits each: a handful of collisions at most
    masked = {client_text(b"same payload")[6:] for _ in range(50)}
    assert len(masked) == 50  # the same text never goes out under the same key twice in a row
