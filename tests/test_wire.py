"""Pre-serialised client events (mapping/wire.py): the JSON text a wire template gives is byte for byte the text
the dict it replaces serialises to, over random sessions in both dialects; and the server's translators use it
for the audio delta."""

from __future__ import annotations

import json
from typing import Any

import orjson

from livegate.mapping import load_mappings
from livegate.translation.translator import Translator
from tests.test_rule_index import replay
from tests.test_rule_plan import APPEND, AUDIO_FRAME, _session

MAPPINGS = load_mappings()


def _texts(inputs: list[Any], *, wire: bool, dialect: str) -> list[Any]:
    translator = Translator(MAPPINGS, deterministic=True, clock=lambda: 1_700_000_000.0, dialect=dialect,
                            sniff_dialect=dialect == "ga", wire=wire,
                            context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    outputs = replay(translator, inputs)
    sent = [[m if isinstance(m, str) else orjson.dumps(m).decode() for m in out.client] for out in outputs]
    return [sent, [out.upstream for out in outputs]]


def test_wire_text_is_byte_identical_to_the_serialised_event() -> None:
    templated = 0
    for dialect in ("ga", "beta"):
        for seed in range(60):
            inputs = _session(seed)
            assert _texts(inputs, wire=True, dialect=dialect) == _texts(inputs, wire=False, dialect=dialect), \
                f"{dialect} seed {seed}"
            templated += 1
    assert templated == 120


def _streaming(wire: bool, dialect: str = "ga") -> Translator:
    translator = Translator(MAPPINGS, deterministic=True, wire=wire, dialect=dialect,
                            context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    translator.start()
    translator.from_client(json.dumps(APPEND))
    translator.from_upstream(orjson.dumps({"setupComplete": {}}))
    translator.from_upstream(orjson.dumps(AUDIO_FRAME))
    return translator


def test_the_server_sends_the_audio_delta_from_its_template() -> None:
    delta = _streaming(wire=True).from_upstream(orjson.dumps(AUDIO_FRAME)).client
    assert len(delta) == 1 and isinstance(delta[0], str)
    as_dict = _streaming(wire=False).from_upstream(orjson.dumps(AUDIO_FRAME)).client
    assert delta[0] == orjson.dumps(as_dict[0]).decode()
    assert json.loads(delta[0]) == {"event_id": as_dict[0]["event_id"], "type": "response.output_audio.delta",
                                    "response_id": "resp_001", "item_id": "item_001", "output_index": 0,
                                    "content_index": 0, "delta": "AAAAAAAA"}
    # The beta dialect renames the event: it is built as a dict and reshaped, as before.
    beta = _streaming(wire=True, dialect="beta").from_upstream(orjson.dumps(AUDIO_FRAME)).client
    assert isinstance(beta[0], dict) and beta[0]["type"] == "response.audio.delta"


def test_a_new_response_gets_its_own_ids_in_the_template() -> None:
    translator = _streaming(wire=True)
    first = json.loads(translator.from_upstream(orjson.dumps(AUDIO_FRAME)).client[0])
    translator.from_upstream(orjson.dumps({"serverContent": {"turnComplete": True}}))
    # the new response's first delta meets a new session state: built as a dict (a layout is made for a
    # state met twice); the next comes from the template, laid out for the new response
    opening = translator.from_upstream(orjson.dumps(AUDIO_FRAME)).client[-1]
    assert isinstance(opening, dict) and opening["type"] == "response.output_audio.delta"
    streamed = translator.from_upstream(orjson.dumps(AUDIO_FRAME)).client
    assert len(streamed) == 1 and isinstance(streamed[0], str)
    second = json.loads(streamed[0])
    assert second["type"] == "response.output_audio.delta"
    assert (second["response_id"], second["item_id"]) == (opening["response_id"], opening["item_id"])
    assert second["response_id"] != first["response_id"] and second["item_id"] != first["item_id"]
    assert second["event_id"] not in (first["event_id"], opening["event_id"])
