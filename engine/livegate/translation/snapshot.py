"""A session's resumable state: what another livegate process needs to carry the session on.

The session core takes one (`SessionCore.snapshot()`) whenever its `checkpoint` question's answer changes
(mappings/resumption.yaml: the configuration, the item store, the resumption handle, a question asked or
answered), that is at the edges of a turn, never per audio chunk. It holds the translator's whole session
state (mappings/state.yaml) but the transform steps' codec streams, which start afresh. The owner's writer
encodes it off the audio path (takeover/writer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

VERSION = 1


class SnapshotError(ValueError):
    """A stored snapshot this livegate cannot restore (another version, or not a snapshot)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    session_id: str
    dialect: str  # the client's dialect (ga, beta), as the session ended up speaking it
    intent: str | None  # ?intent= of the session's URL (transcription)
    session: dict[str, Any]  # the translator's session state, without codec streams
    at_rest: bool  # no turn in flight: nothing to cut or ask again

    def encode(self) -> str:
        return orjson.dumps({"v": VERSION, "session_id": self.session_id, "dialect": self.dialect,
                             "intent": self.intent, "at_rest": self.at_rest, "session": self.session}).decode()

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Snapshot:
        if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("session"), dict):
            raise SnapshotError(f"not a version {VERSION} session snapshot")
        return cls(str(data["session_id"]), str(data["dialect"]), data.get("intent"), data["session"],
                   bool(data.get("at_rest")))
