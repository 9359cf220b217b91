"""The client-event validator: compiled checks agree with jsonschema, and hostile input gets a bounded answer.

The compiled check (fastjsonschema) decides validity on the hot path; jsonschema, the reference, only
words errors. These tests hold the two to the same verdict over every event of the schema suite, and
reproduce the hardening probe's inputs: huge `type` strings, deep nesting, many distinct unknown types.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import tracemalloc
from typing import Any

import fastjsonschema
import pytest

from livegate.mapping import load_mappings
from livegate.server import create_app
from livegate.translation.translator import Translator
from livegate.translation.validation import MAX_DEPTH, ClientEventValidator
from tests.support import serve
from tests.test_front_door import _config, _connect, _text_turn, _until, sim  # noqa: F401 (fixture)
from tests.test_openai_schemas import INVALID_BETA, INVALID_GA, VALID, _object_paths
from tests.test_openai_schemas import validator as reference

VALIDATOR = ClientEventValidator()
MAPPINGS = load_mappings()


def _mutations(dialect: str, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The event itself, then one copy per object in it with an unknown field added."""
    out = [(dialect, event)]
    for path in _object_paths(event):
        bad = json.loads(json.dumps(event))
        node = bad
        for step in path:
            node = node[step]
        node["zz_typo"] = 1
        out.append((dialect, bad))
    return out


CORPUS = [m for dialect, event in VALID for m in _mutations(dialect, event)]
CORPUS += [("ga", case[1]) for case in INVALID_GA] + [("beta", case[1]) for case in INVALID_BETA]


def test_compiled_checks_agree_with_jsonschema_on_every_event() -> None:
    disagreements = []
    for dialect, event in CORPUS:
        check = VALIDATOR._check(event["type"], dialect)
        assert check is not None, event["type"]
        try:
            check(event)
            compiled_valid = True
        except fastjsonschema.JsonSchemaException:
            compiled_valid = False
        reference_valid = not any(True for _ in reference(dialect, event["type"]).iter_errors(event))
        if compiled_valid != reference_valid:
            disagreements.append((dialect, compiled_valid, json.dumps(event)[:200]))
        _, error = VALIDATOR.parse(json.dumps(event), dialect)
        assert (error is None) == reference_valid, (dialect, event, error)
    assert len(CORPUS) > 300
    assert not disagreements


@pytest.mark.parametrize("length", [251, 300, 4096, 1024 * 1024])
def test_a_type_of_any_length_is_an_invalid_value_without_touching_the_filesystem(
        length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    validator = ClientEventValidator()
    validator.known_types("ga")  # the table is built once, at the first event

    def no_filesystem(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the filesystem was touched for a client's type")

    for name in ("read_text", "is_file", "exists", "glob", "rglob", "stat", "open"):
        monkeypatch.setattr(pathlib.Path, name, no_filesystem)
    event_type = "x" * (length - 10) + "/../../ab"
    _, error = validator.parse(json.dumps({"type": event_type, "event_id": "evt_1"}))
    assert error is not None
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "type"
    assert error["error"]["event_id"] == "evt_1"
    assert len(error["error"]["message"]) < 2000  # the type is echoed truncated, never whole
    assert "input_audio_buffer.append" in error["error"]["message"]


def test_memory_stays_bounded_after_many_distinct_unknown_types() -> None:
    validator = ClientEventValidator()
    validator.parse(json.dumps({"type": "warm.up"}))
    tracemalloc.start()
    try:
        for i in range(2000):
            validator.parse(json.dumps({"type": f"unknown.{i}." + "y" * 300}))
        after_few, _ = tracemalloc.get_traced_memory()
        for i in range(2000, 12000):
            validator.parse(json.dumps({"type": f"unknown.{i}." + "y" * 300}))
        after_many, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 10,000 more distinct types of ~310 bytes: a per-type cache would keep over 3 MB
    assert after_many - after_few < 256 * 1024
    assert not validator._compiled and not validator._wording


def _nested(levels: int) -> str:
    """A JSON Schema `levels` objects deep, as text (Python's json recurses and would fail first)."""
    steps = levels // 2  # two objects per step: the schema and its `properties`
    return '{"type": "object", "properties": {"x": ' * steps + '{"type": "string"}' + "}}" * steps


def _tool_update(parameters: str) -> str:
    return ('{"type": "session.update", "event_id": "evt_deep", "session": {"type": "realtime", "tools": ['
            '{"type": "function", "name": "f", "description": "d", "parameters": ' + parameters + "}]}}")


def _translator() -> Translator:
    translator = Translator(MAPPINGS, validator=VALIDATOR, context={
        "model": "gpt-realtime", "setup_model": "models/m", "backend": "aistudio"})
    translator.start()
    return translator


@pytest.mark.parametrize("levels", [MAX_DEPTH, 125, 250, 252, 253, 500, 1000])
def test_deeply_nested_tool_parameters_get_an_error_naming_the_limit(levels: int) -> None:
    translator = _translator()
    out = translator.from_client(_tool_update(_nested(levels)))
    if levels // 2 * 2 + 5 <= MAX_DEPTH:  # plus the event's own levels: session, tools, the tool
        assert out.client[0]["type"] == "session.updated"
        return
    error = out.client[0]
    assert error["type"] == "error"
    assert error["error"]["code"] == "nesting_too_deep"
    assert f"{MAX_DEPTH} levels" in error["error"]["message"]
    assert error["error"]["param"] == "session"
    assert error["error"]["event_id"] == "evt_deep"
    assert not out.upstream
    # the session goes on
    assert translator.from_client(_tool_update('{"type": "object"}')).client[0]["type"] == "session.updated"


def test_a_mistyped_value_990_levels_deep_is_an_error_not_a_recursion_error() -> None:
    deep_item = "[" * 990 + '{"type": "message", "role": "user", "content": "not a list"}' + "]" * 990
    out = _translator().from_client('{"type": "conversation.item.create", "item": ' + deep_item + "}")
    assert out.client[0]["error"]["code"] == "nesting_too_deep"


def test_nesting_beyond_the_json_parser_limit_is_invalid_json_with_the_leading_event_id_echoed() -> None:
    deep = "[" * 10000 + "]" * 10000
    out = _translator().from_client('{"type": "session.update", "event_id": "e\\"1", "session": ' + deep + "}")
    assert (out.client[0]["error"]["code"], out.client[0]["error"]["event_id"]) == ("invalid_json", 'e"1')
    # an event_id that is not the object's leading key could sit inside a nested value: not echoed
    out = _translator().from_client('{"session": {"event_id": "inner", "x": ' + deep + "}}")
    assert out.client[0]["error"]["event_id"] is None


async def test_hostile_events_through_a_running_server_leave_the_session_usable(sim: Any) -> None:  # noqa: F811
    async with serve(create_app(_config(sim.url))) as url, _connect(url.replace("http", "ws")) as ws:
        await _until(ws, "session.created")
        await ws.send(json.dumps({"type": "t" * (1024 * 1024), "event_id": "evt_long"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
            "invalid_value", "type", "evt_long")
        assert len(error["error"]["message"]) < 2000
        await ws.send(_tool_update(_nested(1000)))
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["error"]["code"] == "nesting_too_deep"
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["audio"]}}))
        await _until(ws, "session.updated")
        assert await _text_turn(ws)
