"""livegate's own text frames (ws_frames.py) read back by websockets' parser, as the peer would read them; and
livegate's reading of whole frames beside that parser (FrameReader)."""

from __future__ import annotations

import random

import pytest
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from livegate.ws_frames import FrameReader, MaskKeys, client_text, server_text


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


# -- reading: FrameReader beside websockets' parser ------------------------------------------------------


def _stream(rng: random.Random, side: Side) -> tuple[bytes, list[str | bytes], list[int]]:
    """Frames as a peer of `side` would send them: text, binary, pings, fragmented messages, at each length
    encoding; the messages they make, and where each send ended."""
    sender = Protocol(Side.CLIENT if side is Side.SERVER else Side.SERVER, state=State.OPEN, max_size=None)
    messages: list[str | bytes] = []
    data, ends = b"", []
    for n in range(120):
        size = rng.choice([0, 5, 125, 126, 300, 65535, 65536, 70_000])
        kind = rng.random()
        if kind < 0.4:
            text = f"{n}:" + "é" * (size // 2)
            sender.send_text(text.encode())
            messages.append(text)
        elif kind < 0.7:
            blob = bytes([n % 256]) * size
            sender.send_binary(blob)
            messages.append(blob)
        elif kind < 0.85:
            sender.send_ping(b"p%d" % n)
        else:  # a fragmented text message of three frames
            parts = [f"{n}-{i}:" + "x" * (size // 3) for i in range(3)]
            sender.send_text(parts[0].encode(), fin=False)
            sender.send_continuation(parts[1].encode(), fin=False)
            sender.send_continuation(parts[2].encode(), fin=True)
            messages.append("".join(parts))
        data += b"".join(sender.data_to_send())
        ends.append(len(data))
    return data, messages, ends


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
@pytest.mark.parametrize("seed", range(6))
def test_a_reader_beside_websockets_parser_hands_over_every_message_once_in_order(side: Side, seed: int) -> None:
    """Reads cut anywhere (inside headers, keys, payloads) or where a send ended; the reader takes whole frames
    at the start of a read while its receiver accepts, and the rest goes to websockets' parser."""
    rng = random.Random(seed)
    data, messages, ends = _stream(rng, side)
    parser = Protocol(side, state=State.OPEN, max_size=None)
    reader = FrameReader(masked=side is Side.SERVER, protocol=parser)
    got: list[str | bytes] = []
    taken = 0

    def receiver(message: str | bytes) -> bool:
        nonlocal taken
        if rng.random() < 0.2:
            return False
        taken += 1
        got.append(message)
        return True

    at, pieces, text = 0, [], False  # a fragmented message's frames so far, and whether it is text
    while at < len(data):
        if rng.random() < 0.5:
            read = data[at:at + rng.choice([1, 2, 3, 7, 100, 1500, 70_000, 300_000])]
        else:  # up to the end of one of the next sends
            read = data[at:rng.choice([end for end in ends if end > at][:3])]
        at += len(read)
        read = reader.read(read, receiver)  # what it did not take, followed, for websockets' parser
        parser.receive_data(read)
        for event in parser.events_received():
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                pieces.append(event.data)
                if event.opcode is not Opcode.CONT:
                    text = event.opcode is Opcode.TEXT
                if event.fin:
                    whole = b"".join(pieces)
                    got.append(whole.decode() if text else whole)
                    pieces = []
        assert parser.parser_exc is None
    assert got == messages and taken >= 5  # (a read that begins with a control frame is all websockets')


def test_a_reader_leaves_what_it_does_not_read_whole() -> None:
    parser = Protocol(Side.SERVER, state=State.OPEN, max_size=1000)
    reader = FrameReader(masked=True, protocol=parser)
    small, large = client_text(b'{"a":1}'), client_text(b"x" * 2000)
    got: list[str | bytes] = []
    assert reader.take(small + small[:5], lambda m: got.append(m) is None) == len(small)  # a cut frame stays
    assert reader.take(large + small, got.append) == 0  # over max_size: websockets refuses it (1009)
    assert reader.take(server_text(b"{}"), got.append) == 0  # unmasked from a client: websockets fails it
    bad = bytes([0x81, 0x80 | 2]) + b"\x00" * 4 + b"\xff\xfe"  # a masked text frame (key 0) that is not UTF-8
    assert reader.take(small + bad, lambda m: got.append(m) is None) == len(small)
    assert got == ['{"a":1}', '{"a":1}']


def test_inside_a_fragmented_message_a_reader_reads_nothing() -> None:
    """A text frame inside a fragmented message is a protocol error (websockets closes with 1002): not a
    message to hand over."""
    sender = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    reader = FrameReader(masked=True, protocol=Protocol(Side.SERVER, state=State.OPEN, max_size=None))
    sender.send_text(b"part one", fin=False)
    reader.skip(b"".join(sender.data_to_send()))
    assert not reader.at_frame
    sender.send_ping(b"between")  # control frames may come between the fragments
    reader.skip(b"".join(sender.data_to_send()))
    assert not reader.at_frame
    sender.send_continuation(b", two", fin=True)
    reader.skip(b"".join(sender.data_to_send()))
    assert reader.at_frame
