"""The mapping language's guard rails: declared state (down to nested fields), transform steps,
`refuse`, `let` before `when`, no phantom objects, `get` with a null key, notes to the log, and
Gemini fields no mapping handles.

Each misuse is a load error naming file:line (what `livegate lint` prints); each runtime guard is
observable on a Translator.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from livegate.cli import main
from livegate.mapping import MappingError, load_mappings
from livegate.translation.translator import Translator
from tests.conftest import replace_in

MAPPINGS = load_mappings()


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --- declared state ---------------------------------------------------------------------------------

def test_a_typo_in_a_state_read_is_a_load_error(mappings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mappings / "shared" / "request_response.yaml"
    replace_in(path, 'when: "=session.turn_started"', 'when: "=session.turn_startd"')
    assert main(["lint", "--mappings", str(mappings)]) == 1
    line = _line_of(path, "turn_startd")
    assert f"shared/request_response.yaml:{line}:" in capsys.readouterr().err
    with pytest.raises(MappingError, match=r"session.turn_startd is read but not declared"):
        load_mappings(mappings)


def test_a_write_of_an_undeclared_key_or_from_a_file_not_allowed_is_a_load_error(mappings: Path) -> None:
    replace_in(mappings / "client" / "response.cancel.yaml", "session.discarding: true", "session.discardng: true")
    replace_in(mappings / "upstream" / "goAway.yaml", "session.go_away:", "session.requested:")
    with pytest.raises(MappingError) as error:
        load_mappings(mappings)
    text = str(error.value)
    assert "response.cancel.yaml:" in text and "session.discardng is not declared" in text
    assert "goAway.yaml:" in text and "upstream/goAway may not write session.requested" in text


def test_setting_a_field_of_a_non_object_key_is_a_load_error(mappings: Path) -> None:
    replace_in(mappings / "client" / "response.cancel.yaml", "session.discarding: true", "session.discarding.x: true")
    with pytest.raises(MappingError, match=r"session.discarding is declared as boolean, not an object"):
        load_mappings(mappings)


def _load_error(mappings: Path) -> str:
    with pytest.raises(MappingError) as error:
        load_mappings(mappings)
    return str(error.value)


def test_a_typo_in_a_nested_field_read_names_file_line_column_and_the_field_meant(
        mappings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mappings / "upstream" / "serverContent.yaml"
    replace_in(path, 'output_index: "=session.item.output_index"', 'output_index: "=session.item.output_idx"')
    assert main(["lint", "--mappings", str(mappings)]) == 1
    line = _line_of(path, "output_idx")
    column = path.read_text().splitlines()[line - 1].index("output_idx") + 1
    err = capsys.readouterr().err
    assert f"upstream/serverContent.yaml:{line}:{column}: session.item.output_idx is read but session.item has no " \
           "field output_idx in mappings/state.yaml (did you mean output_index?)" in err
    source, caret = err.splitlines()[1:3]
    assert source.strip() == 'output_index: "=session.item.output_idx"'
    assert caret.index("^") == source.index("output_idx")


def test_a_field_of_the_session_config_is_checked_against_openais_session_schema(mappings: Path) -> None:
    path = mappings / "shared" / "open_upstream.yaml"
    replace_in(path, "session.config.audio.input.format.type", "session.config.audio.input.formt.type")
    assert ("session.config.audio.input.formt.type is read but session.config.audio.input has no field formt in its "
            "schema (did you mean format?)") in _load_error(mappings)


def test_a_field_read_through_a_let_alias_is_checked(mappings: Path) -> None:
    replace_in(mappings / "shared" / "close_message_item.yaml", "audio_end_ms: closing.audio_end_ms,",
               "audio_end_ms: closing.audio_end_mss,")
    text = _load_error(mappings)
    assert "close_message_item.yaml:" in text
    assert "session.item.audio_end_mss is read but session.item has no field audio_end_mss" in text


def test_a_set_of_an_undeclared_nested_field_is_a_load_error(mappings: Path) -> None:
    path = mappings / "upstream" / "serverContent.yaml"
    replace_in(path, "      session.item.status: incomplete", "      session.item.statuss: incomplete")
    line = _line_of(path, "session.item.statuss")
    assert (f"serverContent.yaml:{line}:20: `set: session.item.statuss`: session.item has no field statuss in "
            "mappings/state.yaml (did you mean status?)") in _load_error(mappings)


def test_an_object_written_whole_must_hold_declared_fields(mappings: Path) -> None:
    path = mappings / "shared" / "open_message_item.yaml"
    replace_in(path, "        id: \"=new_id('item')\"", "        idd: \"=new_id('item')\"")
    line = _line_of(path, "idd:")
    assert (f"open_message_item.yaml:{line}:9: `set: session.item` writes idd, but session.item has no field idd "
            "in mappings/state.yaml (did you mean id?)") in _load_error(mappings)


def test_an_object_key_must_say_what_it_holds(mappings: Path) -> None:
    replace_in(mappings / "state.yaml", "shared/give_refusal], open: true,", "shared/give_refusal],")
    line = _line_of(mappings / "state.yaml", "  turn_usage:")
    assert (f"state.yaml:{line}:15: session.turn_usage is an object: say what it holds with one of `fields` (ours, "
            "closed), `values` (a map from ids), `schema` (a shape someone else defines) or `open: true`"
            ) in _load_error(mappings)


def test_a_schema_declaration_must_name_a_schema(mappings: Path) -> None:
    replace_in(mappings / "state.yaml", "schema: openai/common.json#/$defs/session",
               "schema: openai/common.json#/$defs/sesion")
    assert "schema 'openai/common.json#/$defs/sesion' names no schema under schemas/" in _load_error(mappings)


def test_a_map_takes_any_key_but_its_values_are_checked() -> None:
    state = MAPPINGS.state
    assert state.undeclared(("calls", "call_123")) is None
    assert state.check_types({"calls": {"call_1": "get_weather"}}) == []
    assert state.check_types({"calls": {"call_1": 7}}) == ["session.calls.call_1 should be string, holds int: 7"]


def test_stored_nested_fields_are_checked_against_the_declaration() -> None:
    state = MAPPINGS.state
    assert state.check_types({"item": {"id": "item_1", "output_index": 0, "kind": "audio"}}) == []
    assert state.check_types({"item": {"id": "item_1", "output_idx": 0}}) == [
        "session.item.output_idx is not a declared field in mappings/state.yaml"]
    assert state.check_types({"item": {"id": "item_1", "output_index": "0"}}) == [
        "session.item.output_index should be integer, holds str: '0'"]


def test_state_types_and_lifecycle_are_declared_for_every_key_written() -> None:
    state = MAPPINGS.state
    assert state.check_types({"requested": True, "response": {"id": "r"}}) == []
    assert state.check_types({"requested": "yes"}) == ["session.requested should be boolean, holds str: 'yes'"]
    assert state.check_types({"nope": 1}) == ["session.nope is not declared in mappings/state.yaml"]
    assert state.allows("idle", "client/response.create", "requested")
    assert not state.allows("idle", "upstream/usageMetadata", "responding")


# --- transform steps ---------------------------------------------------------------------------------

_STEP = "g711: {step: encode_audio, state: session.output_encoder, codec: \"=session.output_codec\", " \
        "audio: \"=part.inlineData.data\"}"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("step: encode_audio,", "step: encode_audi,", "no transform step 'encode_audi' (did you mean encode_audio?)"),
    ("audio: \"=part.inlineData.data\"", "sound: \"=part.inlineData.data\"", "transform step encode_audio takes no "
     "`sound`"),
    ("state: session.output_encoder", "state: session.output_codec", "session.output_codec is declared as string: a "
     "transform's state is a key declared `type: stream`"),
    ("state: session.output_encoder", "state: session.input_decoder", "upstream/serverContent may not use "
     "session.input_decoder"),
    ("state: session.output_encoder", "state: session.output_encodr", "session.output_encodr is not declared in "
     "mappings/state.yaml (did you mean output_encoder?)"),
], ids=["unknown step", "unknown input", "state not a stream", "state of another writer", "undeclared state"])
def test_a_misdeclared_transform_is_a_load_error(mappings: Path, old: str, new: str, message: str) -> None:
    path = mappings / "upstream" / "serverContent.yaml"
    replace_in(path, _STEP, _STEP.replace(old, new))
    assert message in _load_error(mappings)


def test_a_transforms_state_is_named_by_no_expression_and_no_set(mappings: Path) -> None:
    replace_in(mappings / "upstream" / "serverContent.yaml", 'when: "=g711"', 'when: "=g711 && session.output_encoder"')
    replace_in(mappings / "client" / "response.cancel.yaml", "session.discarding: true", "session.output_encoder: true")
    text = _load_error(mappings)
    assert "session.output_encoder holds a transform's state: only a `transform` step names it" in text
    assert "`set: session.output_encoder`: session.output_encoder holds a transform's state" in text


def test_a_condition_cannot_read_a_transforms_result(mappings: Path) -> None:
    replace_in(mappings / "upstream" / "serverContent.yaml",
               "when: \"=session.item.kind == 'audio' && session.output_codec\"",
               "when: \"=session.item.kind == 'audio' && g711\"")
    assert "`when` reads g711, a transform's result: transforms run after `when` and `let`" in _load_error(mappings)


def test_one_stream_key_keeps_one_kind_of_state(mappings: Path) -> None:
    replace_in(mappings / "state.yaml",
               "writers: [client/input_audio_buffer.append]", "writers: [client/input_audio_buffer.append, "
               "upstream/serverContent, shared/close_message_item]")
    replace_in(mappings / "upstream" / "serverContent.yaml", "state: session.output_encoder",
               "state: session.input_decoder")
    assert "session.input_decoder holds a G.711 decoder" in _load_error(mappings)


def test_codec_streams_are_transform_state_not_functions() -> None:
    """Every JMESPath function but the fresh values (ids, the clock) gives the same result for the same
    arguments: the codec helpers, which continue a stream, are not in the function table."""
    table = Translator(MAPPINGS).helpers.FUNCTION_TABLE
    assert not {"decode_audio", "encode_audio", "flush_audio"} & set(table)
    translator = Translator(MAPPINGS, deterministic=True)
    clip = "////" * 40  # μ-law silence
    once = [translator.helpers.call_function("decode_audio_once", ["pcmu", clip]) for _ in range(2)]
    assert once[0] == once[1], "a whole clip decodes the same every time (no stream carried over)"


# --- refuse ---------------------------------------------------------------------------------------

def test_refuse_is_an_error_event_echoing_the_event_id_then_stop() -> None:
    translator = Translator(MAPPINGS, deterministic=True)
    translator.start()
    out = translator.from_client({"type": "session.update", "event_id": "e1", "session": {
        "type": "realtime", "tool_choice": "required"}})
    assert out.client == [{"event_id": "event_002", "type": "error", "error": {
        "type": "invalid_request_error", "code": "unsupported_value", "param": "session.tool_choice",
        "event_id": "e1",
        "message": "tool_choice must be 'auto' or 'none' with Gemini Live. The update was not applied."}}]
    assert translator.session["config"]["tool_choice"] == "auto"


@pytest.mark.parametrize("extra", ["    stop: true\n", "    emit: []\n", "    set: {session.requested: true}\n"])
def test_refuse_with_another_effect_is_a_load_error(mappings: Path, extra: str) -> None:
    path = mappings / "client" / "session.update.yaml"
    replace_in(path, "    refuse:\n      code: unsupported_value\n      param: session.type\n",
             f"{extra}    refuse:\n      code: unsupported_value\n      param: session.type\n")
    with pytest.raises(MappingError, match="a `refuse` rule cannot also"):
        load_mappings(mappings)


def test_refuse_outside_client_rules_is_a_load_error(mappings: Path) -> None:
    rule = "    set:\n      session.go_away: \"=event.goAway.timeLeft || 'soon'\""
    replace_in(mappings / "upstream" / "goAway.yaml", rule, "    refuse: {code: x, message: y}")
    with pytest.raises(MappingError, match=r"goAway.yaml:.*`refuse` answers a client event"):
        load_mappings(mappings)


# --- let before when -------------------------------------------------------------------------------

def test_when_sees_let_names() -> None:
    translator = Translator(MAPPINGS, deterministic=True)
    translator.start()
    out = translator.from_client({"type": "session.update", "event_id": "v", "session": {
        "type": "realtime", "audio": {"output": {"voice": "robot"}}}})
    assert out.client[0]["error"]["param"] == "session.audio.output.voice"
    out = translator.from_client({"type": "session.update", "session": {"type": "realtime", "audio": {
        "output": {"voice": "coral"}}}})
    assert out.client[0]["type"] == "session.updated"


def test_a_when_reading_a_let_of_a_for_each_rule_is_a_load_error(mappings: Path) -> None:
    replace_in(mappings / "upstream" / "toolCall.yaml", '    for_each: "=event.toolCall.functionCalls"\n',
             '    for_each: "=event.toolCall.functionCalls"\n    when: "=call_id"\n')
    with pytest.raises(MappingError, match="`when` is checked once, before `for_each`"):
        load_mappings(mappings)


# --- runtime guards -----------------------------------------------------------------------------------

@pytest.mark.expects_translation_error
def test_a_set_inside_a_missing_object_fails_the_rule_instead_of_inventing_one(mappings: Path) -> None:
    # A mapping bug: the barge-in rule without its guard would invent `session.item = {status: ...}`.
    replace_in(mappings / "upstream" / "serverContent.yaml",
             'when: "=event.serverContent.interrupted && session.item"', 'when: "=event.serverContent.interrupted"')
    translator = Translator(load_mappings(mappings), deterministic=True)
    translator.start()
    out = translator.from_upstream({"serverContent": {"interrupted": True}})
    assert [e["error"]["code"] for e in out.client if e["type"] == "error"] == ["translation_error"]
    assert "item" not in translator.session


def test_get_with_a_null_key_is_null_not_the_default() -> None:
    translator = Translator(MAPPINGS)
    assert translator.helpers.call_function("get", [{"a": 1}, None, "default"]) is None
    assert translator.helpers.call_function("get", [{"a": 1}, "b", "default"]) == "default"
    assert translator.helpers.call_function("get", [None, "b", "default"]) == "default"


def test_gemini_fields_no_mapping_handles_are_logged_once_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    translator = Translator(MAPPINGS, deterministic=True)
    translator.start()
    with caplog.at_level(logging.DEBUG, logger="livegate.translation.translator"):
        translator.from_upstream({"newGeminiThing": {"x": 1}, "goAway": {"timeLeft": "5s"}})
        translator.from_upstream({"newGeminiThing": {"x": 2}})
    notes = [r.getMessage() for r in caplog.records if "newGeminiThing" in r.getMessage()]
    assert len(notes) == 1 and "no mapping handles" in notes[0]
    assert translator.session["go_away"] == "5s"
