"""The mapping language's guard rails: declared state, `refuse`, `let` before `when`, no phantom
objects, `get` with a null key, notes to the log, and Gemini fields no mapping handles.

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


def test_state_types_and_lifecycle_are_declared_for_every_key_written() -> None:
    state = MAPPINGS.state
    assert state.check_types({"requested": True, "response": {"id": "r"}}) == []
    assert state.check_types({"requested": "yes"}) == ["session.requested should be boolean, holds str: 'yes'"]
    assert state.check_types({"nope": 1}) == ["session.nope is not declared in mappings/state.yaml"]
    assert state.allows("idle", "client/response.create", "requested")
    assert not state.allows("idle", "upstream/usageMetadata", "responding")


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
