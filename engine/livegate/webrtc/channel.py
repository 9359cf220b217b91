"""The seam between a WebRTC call and livegate's realtime session: `CallSocket` is the WebSocket that
`RealtimeSession` (server/realtime.py) drives, carried by the call.

The session uses four things of its WebSocket, and a call provides them:

    receive()           ASGI-style messages: {"type": "websocket.receive", "text": event} for each event
                        on the `oai-events` data channel and for each 20 ms of the caller's microphone (as an
                        `input_audio_buffer.append` of 16 kHz PCM, media.py), in arrival order; then
                        {"type": "websocket.disconnect", "code": ...} when the call ends
    send_text(event)    an OpenAI server event: to the data channel, except what the call's audio takes
    close(code, reason) the session ends the call: the data channel drains, then the peer connection closes
    application_state   CONNECTED until then

What the audio takes, as OpenAI's WebRTC does (the mappings decide when each event is due, this decides
when it leaves; mappings/shared/interrupt_playback.yaml):

    response.output_audio.delta     -> the Playback (played on the outgoing track), never the data channel
    output_audio_buffer.started     held until that response's first frame leaves
    output_audio_buffer.stopped     held until its audio has played out and its response.done has gone
    output_audio_buffer.cleared     the Playback stops now; the event goes out if anything of that response
                                    was heard and not yet played out (else the buffer had nothing to
                                    clear); each assistant item cut short is truncated at the point played
                                    by a `conversation.item.truncate` put first in line for the session
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.websockets import WebSocketState

from livegate.close_codes import POLICY
from livegate.translation.errors import error_event
from livegate.webrtc.playback import Playback

log = logging.getLogger("livegate.webrtc")

AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})  # GA, beta
AUDIO_DONE = frozenset({"response.output_audio.done", "response.audio.done"})
MAX_QUEUED_AUDIO = 250  # 5 s of microphone waiting for the session; newer audio is dropped beyond
MAX_QUEUED_EVENTS = 1000  # data channel events waiting for the session; a caller flooding it is hung up
HIGH_WATER = 1 << 20  # bytes queued on the data channel before send_text waits for the caller to read


class CallSocket:
    def __init__(self, playback: Playback, hang_up: Callable[[int, str], Awaitable[None]], *,
                 has_channel: bool = True) -> None:
        self.playback = playback
        self._hang_up = hang_up
        self.application_state = WebSocketState.CONNECTED
        self.client_state = WebSocketState.CONNECTED
        self.scope: dict[str, Any] = {}  # no transport to abort: a call is dropped by hanging up
        self._inbox: deque[dict[str, Any]] = deque()
        self._arrived = asyncio.Event()
        self._queued_audio = 0
        self._queued_events = 0
        self._dropped_audio = 0
        self._channel: Any = None  # the open oai-events RTCDataChannel
        self._has_channel = has_channel  # the offer asked for one; without it, events have nowhere to go
        self._unsent: list[str] = []  # events before the channel opened
        self._writable = asyncio.Event()
        self._writable.set()
        self._held_started: dict[str, str] = {}
        self._held_stopped: dict[str, str] = {}
        self._done: set[str] = set()  # responses whose response.done went out
        self._items: dict[str, str] = {}  # response id -> its audio item (for truncation)
        self.ended: tuple[int, str] | None = None

    @property
    def channel(self) -> Any:
        """The open `oai-events` data channel, if any."""
        return self._channel

    # -- from the caller ------------------------------------------------------------------------------

    def open_channel(self, channel: Any) -> None:
        """The caller's `oai-events` data channel is open: events queued so far go out."""
        self._channel = channel
        channel.bufferedAmountLowThreshold = HIGH_WATER // 4
        channel.on("bufferedamountlow", self._writable.set)
        unsent, self._unsent = self._unsent, []
        for text in unsent:
            channel.send(text)

    def client_event(self, data: str | bytes) -> None:
        """A message on the data channel: one OpenAI client event (JSON)."""
        if self.ended is not None:
            return
        if self._queued_events >= MAX_QUEUED_EVENTS:
            log.warning("a caller sent over %d events the session has not read: hanging up", MAX_QUEUED_EVENTS)
            self.disconnect(POLICY, "too many events queued")
            return
        if _is_append(data):
            self._refuse_append(data)
            return
        self._queued_events += 1
        self._put({"type": "websocket.receive", "text" if isinstance(data, str) else "bytes": data, "event": True})

    def client_audio(self, pcm16: bytes) -> None:
        """The microphone's next 16 kHz PCM (media.py), as the append event a WebSocket client would send."""
        if self.ended is not None or not pcm16:
            return
        if self._queued_audio >= MAX_QUEUED_AUDIO:
            self._dropped_audio += 1
            if self._dropped_audio == 1:
                log.warning("the session is not keeping up with the caller's audio: dropping microphone frames")
            return
        self._queued_audio += 1
        text = '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(pcm16).decode() + '"}'
        self._put({"type": "websocket.receive", "text": text, "audio": True})

    def disconnect(self, code: int, reason: str) -> None:
        """The call ended on the caller's side (hang-up, ICE failure, the data channel closed)."""
        if self.ended is None:
            self.ended = (code, reason)
            self.application_state = WebSocketState.DISCONNECTED
            self._put({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _put(self, message: dict[str, Any], first: bool = False) -> None:
        if first:
            self._inbox.appendleft(message)
        else:
            self._inbox.append(message)
        self._arrived.set()

    def _refuse_append(self, data: str | bytes) -> None:
        """Audio comes over the call's media track; JSON audio on the data channel would be heard twice."""
        event_id = orjson.loads(data).get("event_id")
        event = error_event("On a WebRTC call the microphone's audio comes over the media track; "
                            "input_audio_buffer.append on the data channel is not accepted.",
                            code="unsupported_event", param="type", event_id=event_id)
        event = {"event_id": "event_" + secrets.token_hex(8), **event}
        self._send(orjson.dumps(event).decode())

    # -- the WebSocket the session drives -------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        message = self._inbox.popleft()
        if message.pop("audio", False):
            self._queued_audio -= 1
        elif message.pop("event", False):
            self._queued_events -= 1
        if message["type"] == "websocket.disconnect":
            self._inbox.appendleft(message)  # it stays the answer
        return message

    async def send_text(self, text: str) -> None:
        event = orjson.loads(text)
        kind = event.get("type")
        if kind in AUDIO_DELTAS:
            self._items[event["response_id"]] = event["item_id"]
            self.playback.add(event["response_id"], event["item_id"], base64.b64decode(event["delta"]))
            return
        if kind == "output_audio_buffer.started":
            self._held_started[event["response_id"]] = text
            return
        if kind == "output_audio_buffer.stopped":
            self._held_stopped[event["response_id"]] = text
            self.playback.end(event["response_id"])
            self._release_stopped(event["response_id"])
            return
        if kind == "output_audio_buffer.cleared":
            self._clear(event["response_id"], text)
            return
        if kind in AUDIO_DONE:
            self.playback.end(event["response_id"])
        await self._send_when_writable(text)
        if kind == "response.done":
            response_id = event["response"]["id"]
            self._done.add(response_id)
            self._release_stopped(response_id)

    async def send_bytes(self, data: bytes) -> None:
        await self.send_text(data.decode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.disconnect(code, reason)
        self.client_state = WebSocketState.DISCONNECTED
        await self._hang_up(code, reason)

    # -- playback notices (media.py's track) ----------------------------------------------------------

    def on_playback(self, kind: str, response_id: str) -> None:
        if kind == "started":
            text = self._held_started.pop(response_id, None)
            if text is not None:
                self._send(text)
        elif kind == "drained":
            self._release_stopped(response_id)

    def _release_stopped(self, response_id: str) -> None:
        if response_id in self._held_stopped and response_id in self._done and self.playback.drained(response_id):
            self._send(self._held_stopped.pop(response_id))
            self._done.discard(response_id)
            self._items.pop(response_id, None)

    def _clear(self, response_id: str, text: str) -> None:
        cut = self.playback.clear()
        heard = self.playback.was_started(response_id)
        for cut_response in cut.responses:
            self._held_stopped.pop(cut_response, None)
            self._held_started.pop(cut_response, None)
        self._held_started.pop(response_id, None)  # nothing of it will play now
        if response_id in cut.responses and heard:
            self._send(text)
        for item_id, played_ms in cut.truncated:  # what the user heard of each item, for the item store
            self._put({"type": "websocket.receive", "text": orjson.dumps({
                "type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                "audio_end_ms": played_ms}).decode()}, first=True)

    # -- to the caller --------------------------------------------------------------------------------

    def _send(self, text: str) -> None:
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(text)
        elif self._channel is None and self._has_channel and self.ended is None:
            self._unsent.append(text)

    async def _send_when_writable(self, text: str) -> None:
        """Send, first waiting while the caller has over HIGH_WATER bytes unread (the session's write
        timeout then takes a caller that stopped reading as gone, as for a WebSocket)."""
        channel = self._channel
        while channel is not None and channel.readyState == "open" and channel.bufferedAmount > HIGH_WATER:
            self._writable.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._writable.wait()
        self._send(text)


def _is_append(data: str | bytes) -> bool:
    """Whether a data channel message is an input_audio_buffer.append (checked cheaply, then parsed)."""
    head = data[:200] if isinstance(data, str) else data[:200].decode(errors="ignore")
    if "input_audio_buffer.append" not in head:
        return False
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("type") == "input_audio_buffer.append"
