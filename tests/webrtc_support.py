"""A WebRTC caller for the tests and the bench: aiortc as the client peer, over loopback only.

`Caller` offers audio and the `oai-events` data channel as a browser does, posts the offer to livegate's
`/v1/realtime/calls`, speaks what it is given (PCM at 48 kHz, paced in real time, silence in between) and
records what comes back: every data channel event and every decoded audio frame, with arrival times.
Both peers gather host candidates on 127.0.0.1 only (livegate.webrtc.ice), so nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import shutil
import subprocess
import time
import wave
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

aiortc = __import__("pytest").importorskip("aiortc", reason="the webrtc extra (aiortc) is not installed")
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402
from av import AudioFrame  # noqa: E402

from livegate.webrtc.ice import IcePolicy, ice_policy  # noqa: E402

RATE = 48000
FRAME = 960
LOOPBACK = IcePolicy(addresses=("127.0.0.1",))
LOOPBACK_SETTINGS = {"webrtc_host_addresses": ["127.0.0.1"]}


def espeak(text: str, path: Path) -> np.ndarray:
    """`text` spoken by espeak-ng, as float samples at 48 kHz."""
    from scipy.signal import resample_poly

    espeak_ng = shutil.which("espeak-ng")
    if espeak_ng is None:
        __import__("pytest").skip("espeak-ng is not installed (.ci/run installs it)")
    subprocess.run([espeak_ng, "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    g = np.gcd(rate, RATE)
    return resample_poly(samples, RATE // g, rate // g)


class Microphone(MediaStreamTrack):
    """The caller's voice: queued speech, else silence, one 20 ms frame every 20 ms."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: deque[np.ndarray] = deque()
        self._start: float | None = None
        self._pts = 0
        self.spoke_until: float | None = None  # when the last queued speech sample was sent

    def say(self, samples: np.ndarray) -> None:
        for i in range(0, len(samples), FRAME):
            self.queue.append(samples[i:i + FRAME])

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            delay = self._start + self._pts / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        chunk = np.zeros(FRAME)
        if self.queue:
            speech = self.queue.popleft()
            chunk[:len(speech)] = speech
            if not self.queue:
                self.spoke_until = time.monotonic()
        frame = AudioFrame.from_ndarray(np.clip(chunk, -32768, 32767).astype(np.int16).reshape(1, -1),
                                        format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._pts, fractions.Fraction(1, RATE)
        return frame


class Caller:
    """One call from the client's side."""

    def __init__(self, base_url: str, key: str | None = None, *, channel: bool = True, video: bool = False) -> None:
        self.base_url = base_url
        self.key = key
        self.microphone = Microphone()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.frames: list[tuple[float, np.ndarray]] = []  # (arrival, mono float samples at 48 kHz)
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self.call_id: str | None = None
        self._with_channel = channel
        self._with_video = video
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def offer(self) -> str:
        with ice_policy(LOOPBACK):
            self.pc = pc = RTCPeerConnection()
            pc.addTrack(self.microphone)
            if self._with_video:
                pc.addTransceiver("video", direction="recvonly")
            if self._with_channel:
                self.channel = pc.createDataChannel("oai-events")
                self.channel.on("message", self._event)
            pc.on("track", lambda track: self._tasks.append(asyncio.create_task(self._listen(track))))
            await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    async def connect(self, *, model: str | None = "gpt-realtime", session: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> httpx.Response:
        """Offer, post, apply the answer. Returns livegate's HTTP response (201 on success)."""
        sdp = await self.offer()
        auth = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        params = {"model": model} if model else {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            if session is None:
                response = await http.post("/v1/realtime/calls", params=params, content=sdp,
                                           headers={"Content-Type": "application/sdp", **auth, **(headers or {})})
            else:
                response = await http.post("/v1/realtime/calls", params=params, headers={**auth, **(headers or {})},
                                           files={"sdp": (None, sdp, "application/sdp"),
                                                  "session": (None, orjson.dumps(session), "application/json")})
        if response.status_code == 201:
            self.call_id = response.headers["location"].rsplit("/", 1)[-1]
            assert self.pc is not None
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        return response

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(orjson.dumps(event).decode())

    def _event(self, message: str) -> None:
        self.events.append((time.monotonic(), orjson.loads(message)))
        self._arrived.set()

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray().astype(np.float64).reshape(-1)  # type: ignore[union-attr]
            channels = len(frame.layout.channels)  # type: ignore[union-attr]
            self.frames.append((time.monotonic(), data.reshape(-1, channels).mean(axis=1)))

    def types(self) -> list[str]:
        return [event["type"] for _, event in self.events]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """The `count`-th event of type `kind` (an `error` event fails the wait)."""
        async with asyncio.timeout(timeout):
            while True:
                seen = [e for _, e in self.events if e["type"] == kind]
                if len(seen) >= count:
                    return seen[count - 1]
                errors = [e for _, e in self.events if e["type"] == "error"]
                assert not errors, errors
                self._arrived.clear()
                await self._arrived.wait()

    def arrival(self, kind: str, count: int = 1) -> float:
        return [t for t, e in self.events if e["type"] == kind][count - 1]

    def audio(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        """The answer audio received between two times, as one signal."""
        chunks = [f for t, f in self.frames if since <= t <= until]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    async def hang_up(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.pc is not None:
            await self.pc.close()
