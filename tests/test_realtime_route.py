"""The realtime route's client writes under the real server (uvicorn, websockets-sansio): a session's events are
framed straight onto the open connection, not through one ASGI `send` coroutine each, and still reach the
client whole and in order; a connection that is not open for writing goes back to the ASGI `send`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from livegate.config import parse_config
from livegate.server import create_app
from livegate.server.realtime_route import SessionSocket
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve

MASTER = "sk-route-test"


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    async with GeminiLiveSimulator(chunk_delay=0, api_key=None) as sim:
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
                "model": "gemini/gemini-live-2.5-flash", "api_key": "AIza-route", "api_base": sim.url}}],
            "general_settings": {"master_key": MASTER},
            "livegate_settings": {"reattach_grace_s": 0}})  # a dropped client's session ends at once
        async with serve(create_app(config, simulator_chunk_delay=0)) as url:
            yield url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"


def _count_asgi_sends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ASGI messages the server's protocol was handed, by type."""
    sent: list[str] = []
    asgi_send = WebSocketsSansIOProtocol.send

    async def counted(self: WebSocketsSansIOProtocol, message: Any) -> None:
        sent.append(message["type"])
        await asgi_send(self, message)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "send", counted)
    return sent


async def _text_turn(url: str) -> list[dict[str, Any]]:
    events = []
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {MASTER}"}) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}}))
        await ws.send(json.dumps({"type": "response.create", "event_id": "evt_ask"}))
        while not events or events[-1]["type"] != "response.done":
            events.append(json.loads(await ws.recv()))
    return events


async def test_a_sessions_events_are_framed_onto_the_open_connection_directly(
        gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _count_asgi_sends(monkeypatch)
    events = await _text_turn(gateway)
    types = [e["type"] for e in events]
    assert types[0] == "session.created" and "response.output_text.delta" in types
    assert types.index("response.created") < types.index("response.output_text.delta") < types.index(
        "response.output_text.done") < types.index("response.done")
    assert events[-1]["response"]["status"] == "completed"
    # The handshake's accept is an ASGI message; no event of the session was.
    assert sent.count("websocket.accept") == 1 and "websocket.send" not in sent


async def test_the_events_of_one_output_go_out_in_one_write(gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[list[str]] = []
    direct = SessionSocket.__init__

    def counted(self: SessionSocket, scope: Any, receive: Any, send: Any) -> None:
        direct(self, scope, receive, send)
        real = self.write_now
        assert real is not None, "the server's protocol is uvicorn's websockets-sansio one"

        def write_now(texts: Any) -> bool:
            writes.append([json.loads(text)["type"] for text in texts])
            return real(texts)

        self.write_now = write_now

    monkeypatch.setattr(SessionSocket, "__init__", counted)
    events = await _text_turn(gateway)
    written = [t for write in writes for t in write]
    assert written[:len(events)] == [e["type"] for e in events]  # all of them, in order (and then the rest)
    # the turn's end (the text, its part, the item and the response done) is one write, one TCP segment
    (end,) = [write for write in writes if "response.done" in write]
    assert end[0] == "response.output_text.done" and len(end) >= 4 and {
        "response.content_part.done", "response.output_item.done"} < set(end)


async def test_writes_the_direct_path_declines_go_through_the_asgi_send_in_order(
        gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _count_asgi_sends(monkeypatch)
    direct = SessionSocket.__init__

    def alternating(self: SessionSocket, scope: Any, receive: Any, send: Any) -> None:
        direct(self, scope, receive, send)
        real = self.write_now
        assert real is not None, "the server's protocol is uvicorn's websockets-sansio one"
        calls = iter(range(1_000_000))
        self.write_now = lambda texts: next(calls) % 3 == 0 and real(texts)  # as if paused two times in three

    monkeypatch.setattr(SessionSocket, "__init__", alternating)
    events = await _text_turn(gateway)
    types = [e["type"] for e in events]
    assert types[0] == "session.created" and events[-1]["response"]["status"] == "completed"
    assert types.index("response.created") < types.index("response.output_text.delta") < types.index(
        "response.output_text.done") < types.index("response.done")
    assert sent.count("websocket.send") >= 2  # the writes declined went the ASGI way


async def test_a_connection_reset_before_uvicorn_hears_of_it_is_not_written_to(
        gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write in the moment between the peer's reset and uvicorn's end of the connection raises (the session
    holds the event for a reattach, or ends) instead of going into the void, where asyncio logs every one."""
    sockets: list[SessionSocket] = []
    direct = SessionSocket.__init__

    def kept(self: SessionSocket, scope: Any, receive: Any, send: Any) -> None:
        direct(self, scope, receive, send)
        sockets.append(self)

    monkeypatch.setattr(SessionSocket, "__init__", kept)
    async with websockets.connect(gateway, additional_headers={"Authorization": f"Bearer {MASTER}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        (socket,) = sockets
        await socket.send_text('{"type": "rate_limits.updated", "rate_limits": []}')  # open: written directly
        assert json.loads(await ws.recv())["type"] == "rate_limits.updated"
        socket._send.__self__.transport.abort()  # type: ignore[attr-defined]  # uvicorn hears of it next turn
        with pytest.raises(ConnectionResetError):
            await socket.send_text('{"type": "rate_limits.updated", "rate_limits": []}')


async def test_a_sessions_frames_are_handed_over_as_they_are_read(gateway: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Once Gemini has set the session up, the client's events and Gemini's frames reach the session core from
    the sockets' read callbacks (RealtimeSession._take), not through the ASGI queue and a task each."""
    from livegate.server.realtime import RealtimeSession

    taken: list[str] = []
    take = RealtimeSession._take

    def counted(self: RealtimeSession, share: Any, translate: Any, *frame: Any) -> bool:
        done = take(self, share, translate, *frame)
        if done:
            taken.append("client" if translate == self._client_input else "gemini")
        return done

    monkeypatch.setattr(RealtimeSession, "_take", counted)
    first = await _text_turn(gateway)  # (its first events wait for Gemini's setup, in the queue)
    assert first[-1]["type"] == "response.done"
    assert taken.count("client") >= 1 and taken.count("gemini") >= 1, taken  # (a burst queues behind a write)
