"""A voice turn from a WAV file through livegate with the official openai SDK: the file is the user's
speech, the answer is printed as its transcript and saved as a WAV file.

    python examples/voice.py question.wav                      # the answer goes to answer.wav
    python examples/voice.py question.wav --out reply.wav --voice marin

Any 16-bit PCM WAV works (mono or stereo, any rate): it is mixed to mono and resampled to the 24 kHz
PCM16 the Realtime API takes. To record one: `espeak-ng -w question.wav "What is the weather in Paris?"`,
or any recorder that saves WAV. The turn is committed by the script (manual turns, turn_detection null),
so the file needs no silence at the end. Connects to livegate at http://127.0.0.1:4000 (--url, or
LIVEGATE_URL) with the key in LIVEGATE_API_KEY, if any. A refusal is printed as livegate worded it, and the
script exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

RATE = 24_000  # the Realtime API's PCM16 rate, both ways
CHUNK_SECONDS = 0.1  # audio goes up in appends of this length, as a microphone would send it


class Refused(Exception):
    """livegate answered with an `error` event the conversation cannot go on after."""


def close_reason(closed: ConnectionClosed) -> str:
    """A close as livegate sent it: its code and reason (the reason starts with the error's code)."""
    frame = closed.rcvd or closed.sent
    return f"{frame.reason or 'no reason given'} (close code {frame.code})" if frame else "the connection dropped"


def read_speech(path: Path) -> bytes:
    """The WAV file as 24 kHz mono PCM16 (little-endian bytes)."""
    with wave.open(str(path)) as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: 16-bit PCM expected, this file has {8 * wav.getsampwidth()}-bit samples")
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    mono = samples.reshape(-1, channels).mean(axis=1)
    if rate != RATE:  # linear interpolation: plenty for speech going to a speech model
        positions = np.arange(round(len(mono) * RATE / rate)) * rate / RATE
        mono = np.interp(positions, np.arange(len(mono)), mono)
    return np.clip(np.round(mono), -32768, 32767).astype("<i2").tobytes()


def websocket_base(url: str) -> str:
    """livegate's address (http://HOST:PORT) as the SDK's websocket_base_url (ws://HOST:PORT/v1)."""
    url = url.rstrip("/")
    url = "ws" + url[4:] if url.startswith("http") else url
    return url if url.endswith("/v1") else url + "/v1"



async def session_created(conn: Any) -> None:
    """Wait for session.created: a refused connection gets an `error` event instead, then closes."""
    event = await conn.recv()
    if event.type == "error":
        raise Refused(f"{event.error.code}: {event.error.message}")


async def talk(url: str, model: str, speech: bytes, voice: str) -> tuple[str, bytes]:
    """Send one spoken turn; return the answer's transcript and its audio (24 kHz PCM16)."""
    client = AsyncOpenAI(api_key=os.environ.get("LIVEGATE_API_KEY", "no-key"), websocket_base_url=websocket_base(url))
    transcript, audio = "", bytearray()
    async with client.realtime.connect(model=model) as conn:
        await session_created(conn)
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None,
                                "transcription": {"model": "gpt-4o-transcribe"}},
                      "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": voice}}})
        step = int(RATE * CHUNK_SECONDS) * 2
        for start in range(0, len(speech), step):
            await conn.input_audio_buffer.append(audio=base64.b64encode(speech[start:start + step]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print(f"you said: {event.transcript}")
            elif event.type == "response.output_audio.delta":
                audio += base64.b64decode(event.delta)
            elif event.type == "response.output_audio_transcript.done":
                transcript = event.transcript
            elif event.type == "error":
                raise Refused(f"{event.error.code}: {event.error.message}")
            elif event.type == "response.done":
                return transcript, bytes(audio)
    raise Refused("the session closed before the answer ended")


def save_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", type=Path, help="the user's speech, a 16-bit PCM WAV file")
    parser.add_argument("--out", type=Path, default=Path("answer.wav"), help="where the spoken answer goes")
    parser.add_argument("--voice", default="marin", help="an OpenAI voice name (or a Gemini one)")
    parser.add_argument("--url", default=os.environ.get("LIVEGATE_URL", "http://127.0.0.1:4000"),
                        help="livegate's address (default: $LIVEGATE_URL, else http://127.0.0.1:4000)")
    parser.add_argument("--model", default="gpt-realtime")
    args = parser.parse_args()
    try:
        speech = read_speech(args.wav)
    except (OSError, EOFError, ValueError, wave.Error) as exc:
        print(f"cannot read {args.wav}: {exc}", file=sys.stderr)
        return 1
    try:
        transcript, audio = asyncio.run(talk(args.url, args.model, speech, args.voice))
    except Refused as refusal:
        print(f"livegate refused: {refusal}", file=sys.stderr)
        return 1
    except ConnectionClosed as closed:  # closed before an error event could be read (a refusal, a restart)
        print(f"livegate closed the session: {close_reason(closed)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach livegate at {args.url} ({exc.strerror or exc}): is it running?", file=sys.stderr)
        return 1
    save_wav(args.out, audio)
    print(f"answer: {transcript}")
    print(f"[{len(speech) / 2 / RATE:.1f} s of speech sent, {len(audio) / 2 / RATE:.1f} s of answer in {args.out}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
