"""The rule index (mapping/index.py) never changes what a session does: every input run both ways agrees."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from livegate.mapping import load_mappings
from livegate.mapping.index import RuleIndex
from livegate.translation.translator import Translator

MAPPINGS = load_mappings()
AUDIO = "AAAAAA==" * 20

CLIENT = [
    {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}},
    {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                           "audio": {"input": {"turn_detection": None}}}},
    {"type": "session.update", "session": {"type": "realtime", "tools": [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}},
    {"type": "input_audio_buffer.append", "audio": AUDIO},
    {"type": "input_audio_buffer.append", "audio": "not base64!"},
    {"type": "input_audio_buffer.commit"},
    {"type": "response.create"},
    {"type": "response.cancel"},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "hi"}]}},
    {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1",
                                                  "output": "{\"ok\": true}"}},
]
UPSTREAM = [
    {"setupComplete": {}},
    {"serverContent": {"modelTurn": {"parts": [{"text": "Hello "}]}}},
    {"serverContent": {"modelTurn": {"parts": [{"text": "thinking", "thought": True}, {"text": "there"}]}}},
    {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                               "data": "AA-_"}}]}}},
    {"serverContent": {"outputTranscription": {"text": "spoken words"}}},
    {"serverContent": {"inputTranscription": {"text": "user words"}}},
    {"serverContent": {"interrupted": True}},
    {"serverContent": {"turnComplete": True}},
    {"serverContent": {"generationComplete": True}},
    {"serverContent": {"modelTurn": {"parts": [{"text": "end"}]}, "turnComplete": True},
     "usageMetadata": {"promptTokenCount": 3, "responseTokenCount": 5}},
    {"usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3}},
    {"toolCall": {"functionCalls": [{"id": "call_1", "name": "lookup", "args": {"q": "x"}}]}},
    {"toolCallCancellation": {"ids": ["call_1"]}},
    {"voiceActivity": {"voiceActivityType": "ACTIVITY_START"}},
    {"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}},
    {"goAway": {"timeLeft": "10s"}},
]


def _session(seed: int) -> list[Any]:
    """A random session: the same inputs, in the same order, for both runs."""
    rng = random.Random(seed)
    inputs: list[Any] = [("client", CLIENT[rng.randrange(3)]), ("client", CLIENT[3])]
    for _ in range(30):
        roll = rng.random()
        if roll < 0.35:
            inputs.append(("client", rng.choice(CLIENT)))
        elif roll < 0.95:
            inputs.append(("upstream", rng.choice(UPSTREAM)))
        else:
            inputs.append(("idle", None))
    return inputs


def replay(translator: Translator, inputs: list[Any]) -> list[Any]:
    """Feed ("client" | "upstream" | "idle", value) inputs to `translator`; its Outputs, start's first. The
    methods run unchecked: what the callers compare is two runs (conftest checks SDK conformance elsewhere)."""
    start, from_client, from_upstream, upstream_idle = (
        getattr(getattr(Translator, name), "__wrapped__", getattr(Translator, name))
        for name in ("start", "from_client", "from_upstream", "upstream_idle"))
    outputs = [start(translator)]
    for kind, value in inputs:
        if kind == "client":
            outputs.append(from_client(translator, json.dumps(value)))
        elif kind == "upstream":
            outputs.append(from_upstream(translator, orjson.dumps(value)))
        else:
            outputs.append(upstream_idle(translator))
    return outputs


def _run(inputs: list[Any]) -> list[Any]:
    translator = Translator(MAPPINGS, deterministic=True, clock=lambda: 1_700_000_000.0,
                            context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    outputs = replay(translator, inputs)
    return [(out.client, out.upstream) for out in outputs] + [translator.session]


def test_indexed_rules_give_the_same_session_as_all_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = [_session(seed) for seed in range(80)]
    indexed = [_run(inputs) for inputs in sessions]
    monkeypatch.setattr(RuleIndex, "rules_for", lambda self, event: self.rules)
    unindexed = [_run(inputs) for inputs in sessions]
    for seed, (a, b) in enumerate(zip(indexed, unindexed, strict=True)):
        assert a == b, f"seed {seed}"


def test_an_audio_frame_only_reaches_the_rules_that_read_model_output() -> None:
    rules = MAPPINGS.upstream["serverContent"].index.rules_for(UPSTREAM[3])
    names = {rule.name for rule in rules}
    assert "audio delta" in names
    assert not names & {"input transcription delta", "barge-in cancels the response in flight",
                        "a cancelled turn is over", "audio transcript delta"}
    everything = MAPPINGS.upstream["serverContent"].index.rules_for(
        {"serverContent": {"modelTurn": {}, "outputTranscription": {}, "inputTranscription": {}, "interrupted": True,
                           "turnComplete": True, "turnCompleteReason": "X", "waitingForInput": True}})
    assert everything == MAPPINGS.upstream["serverContent"].rules
