"""One WebRTC call: the peer connection (aiortc: ICE, DTLS, SRTP, SCTP), its media (media.py), and the
realtime session that serves it through a CallSocket (channel.py), exactly as it serves a WebSocket.

Life of a call:
    answer()   the offer is applied, Opus is the only audio codec, the answer is made (ICE candidates
               gathered, non-trickle), and the session starts (its first events wait for the data channel)
    run()      the session runs until the caller hangs up (pc closed or failed, data channel closed, POST
               .../hangup) or the session ends the call (Gemini closed, a limit, a budget: the session's
               `error` event goes out first, then the peer connection closes)
    a caller that has not connected within webrtc_connect_timeout_s is dropped; Gemini is contacted only
    when the first content arrives, so such a call costs nothing upstream
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from av import AudioFrame
from fastapi import WebSocket

from livegate.accounting.gate import Grant
from livegate.close_codes import ABNORMAL, NORMAL
from livegate.observability.session import watch_session
from livegate.server.app import session_translator
from livegate.server.realtime import RealtimeSession
from livegate.upstream.pool import Placement
from livegate.webrtc.channel import CallSocket
from livegate.webrtc.ice import IcePolicy, ice_policy
from livegate.webrtc.media import Microphone, SpeakerTrack, frame_samples
from livegate.webrtc.playback import Playback

if TYPE_CHECKING:
    from livegate.server.app import Gateway

log = logging.getLogger("livegate.webrtc")

EVENTS_CHANNEL = "oai-events"
DRAIN_S = 1.0  # on a close, how long the data channel may take to deliver the last events
_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local .*$\n?", re.MULTILINE | re.IGNORECASE)


class OfferError(ValueError):
    """The offer cannot be answered (the route turns it into a 400)."""


class Call:
    def __init__(self, gateway: Gateway, *, placement: Placement, model: str, grant: Grant, beta: bool,
                 session_update: dict[str, Any] | None, has_channel: bool,
                 on_end: Callable[[Call], None]) -> None:
        self.id = "rtc_" + secrets.token_hex(12)
        self.gateway = gateway
        self.grant = grant
        self.owner = grant.principal.token_hash
        self.settings = gateway.config.webrtc
        self.started = time.monotonic()
        self._on_end = on_end
        self.playback = Playback()
        self.socket = CallSocket(self.playback, self._close_pc, has_channel=has_channel)
        self.speaker = SpeakerTrack(self.playback, self.socket.on_playback)
        self.connected = asyncio.Event()
        provider = gateway.pools.provider(placement.route)  # the deployment of its pool the call went to
        watch = watch_session(gateway, placement.route, model, provider.backend, grant, {}, transport="webrtc",
                              dialect="beta" if beta else "ga")
        translator = session_translator(gateway, placement.route, model, provider, grant, beta=beta,
                                        transport="webrtc", watch=watch)
        # The seam: the session drives the CallSocket as the WebSocket it was written for (channel.py).
        self.session = RealtimeSession(cast(WebSocket, self.socket), translator, provider, model,
                                       gateway.config.timeouts, grant=grant, policy=gateway.resumption,
                                       placement=placement, watch=watch,
                                       watchdog=gateway.config.watchdog)
        if session_update:  # the call's own session (the multipart form's), applied first as OpenAI does
            self.socket.client_event(_session_update(session_update, translator.dialect))
        self.pc: RTCPeerConnection | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self._listening = False

    async def answer(self, offer: str) -> str:
        """Apply the caller's offer; return the SDP answer."""
        settings = self.settings
        servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                   for s in settings.ice_servers]
        with ice_policy(IcePolicy(settings.host_addresses, settings.udp_ports)):
            self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=servers or None))
            pc.on("connectionstatechange", self._state_changed)
            pc.on("datachannel", self._channel_opened)
            pc.on("track", self._track_arrived)
            voice = None
            if "\nm=audio" in offer:  # the call's voice, both ways, in Opus: set before the offer is applied,
                voice = pc.addTransceiver(self.speaker, direction="sendrecv")  # which is when codecs are picked
                voice.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                           if c.mimeType.lower() == "audio/opus"])
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=_without_mdns(offer), type="offer"))
            except Exception as exc:  # aiortc's parser: ValueError, KeyError... on a malformed offer
                raise OfferError(f"The SDP offer could not be applied: {type(exc).__name__}: {exc}"[:300]) from None
            for transceiver in pc.getTransceivers():
                if transceiver is not voice:  # video, a second audio line: inactive (nothing sent or decoded)
                    transceiver.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def run(self) -> None:
        """The call's life: the session, and a watch for a caller that never connects."""
        self._tasks.append(asyncio.create_task(self._connect_deadline()))
        try:
            await self.session.run()
        except Exception:
            log.exception("call %s failed", self.id)
        finally:
            for task in self._tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close_pc(*(self.socket.ended or (NORMAL, "")))
            self._on_end(self)
            log.info("call %s ended after %.1f s: %s", self.id, time.monotonic() - self.started,
                     (self.socket.ended or (NORMAL, ""))[1] or "normal")

    def hang_up(self, code: int = NORMAL, reason: str = "hung up") -> None:
        """End the call from livegate's side (POST .../hangup, shutdown): the session ends as if the caller left."""
        self.socket.disconnect(code, reason)

    # -- aiortc's events -------------------------------------------------------------------------------

    async def _state_changed(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state == "failed":
            self.socket.disconnect(ABNORMAL, "the call's connection failed (ICE/DTLS)")
        elif state == "closed":
            self.socket.disconnect(NORMAL, "the caller hung up")

    def _channel_opened(self, channel: Any) -> None:
        if channel.label != EVENTS_CHANNEL:
            log.info("call %s: ignoring data channel %r (events go on %r)", self.id, channel.label[:64], EVENTS_CHANNEL)
            return
        channel.on("message", self.socket.client_event)
        channel.on("close", lambda: self.socket.disconnect(NORMAL, "the caller closed the data channel"))
        if channel.readyState == "open":
            self.socket.open_channel(channel)
        else:
            channel.on("open", lambda: self.socket.open_channel(channel))

    def _track_arrived(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._listening:  # the first audio line is the microphone
            self._listening = True
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        """The caller's microphone, frame by frame, into the session."""
        microphone = Microphone()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, AudioFrame):
                continue
            samples, channels = frame_samples(frame)
            self.socket.client_audio(microphone.convert(samples, channels, frame.sample_rate, frame.pts))

    async def _connect_deadline(self) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self.connected.wait()
        except TimeoutError:
            log.info("call %s: the caller did not connect within %g s", self.id, self.settings.connect_timeout_s)
            self.socket.disconnect(ABNORMAL, "the caller did not connect")

    async def _close_pc(self, code: int, reason: str) -> None:
        """Close the peer connection, once, after the data channel has delivered what is queued."""
        if self._closing or self.pc is None:
            return
        self._closing = True
        self.speaker.stop()
        channel = self.socket.channel
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                while channel is not None and channel.readyState == "open" and channel.bufferedAmount > 0:
                    await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            await self.pc.close()


def _session_update(session: dict[str, Any], dialect: str) -> str:
    import orjson

    body = {k: v for k, v in session.items() if k != "model"}  # the model picked the route already
    if dialect == "ga":
        body.setdefault("type", "realtime")
    return orjson.dumps({"type": "session.update", "session": body}).decode()


def _without_mdns(sdp: str) -> str:
    """The offer without `.local` candidates: resolving a browser's mDNS name takes multicast on the
    gateway's network and cannot succeed across the internet; such a browser is found by its checks
    (peer-reflexive) instead."""
    return _MDNS_CANDIDATE.sub("", sdp)
