"""The transport floor (`bench_load.py --floor`): livegate as served, with the translation of the two audio
frames reduced to what any translating gateway must do, so the bench can tell the translator's cost from
the transport's.

On a PYTHONPATH this module is imported at interpreter start and replaces, in this process only, the
session core's handling of
- a client `input_audio_buffer.append` once the session has its Gemini connection: parsed with orjson, its
  audio put into a `realtimeInput` message (no validation, no rules, no session state);
- a Gemini audio frame inside an open audio response: parsed with orjson, each part's audio serialised as a
  `response.output_audio.delta` with the response's ids (no rules, no meter, no usage).
Everything else (setup, a response's first frame, turn ends, every other event) goes through the real
core, so sessions open, answer and close as usual. Never on a PYTHONPATH outside this bench.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Output

_APPEND = '{"type":"input_audio_buffer.append"'
_client_frame = SessionCore.client_frame
_upstream_frame = SessionCore.upstream_frame
_ids = itertools.count()


def client_frame(self: SessionCore, frame: Any) -> Output:
    if self.link and isinstance(frame, str) and frame.startswith(_APPEND):
        event = orjson.loads(frame)
        out = Output(upstream=[{"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=24000",
                                                             "data": event["audio"]}}}])
        out.link = self.link
        return out
    return _client_frame(self, frame)


def upstream_frame(self: SessionCore, link: int, frame: Any) -> Output:
    if link == self.link and isinstance(frame, bytes) and b'"inlineData"' in frame and b'"turnComplete"' not in frame:
        session = self.translator.session
        response, item = session.get("response") or {}, session.get("item") or {}
        if response.get("id") and item.get("kind") == "audio":
            parts = orjson.loads(frame)["serverContent"]["modelTurn"]["parts"]
            return Output(client=[orjson.dumps({
                "type": "response.output_audio.delta", "event_id": f"event_floor{next(_ids)}",
                "response_id": response["id"], "item_id": item.get("id"), "output_index": 0, "content_index": 0,
                "delta": part["inlineData"]["data"]}).decode() for part in parts])
    return _upstream_frame(self, link, frame)


SessionCore.client_frame = client_frame  # type: ignore[method-assign]
SessionCore.upstream_frame = upstream_frame  # type: ignore[method-assign]
