"""The acceptance policy's tables (client_events, session_fields, response_fields in mappings/tables.yaml)
are complete and true.

Every field of the openai SDK's session and response.create types and every client event type (GA and
beta) is classified; every refused session field has a rule in client/session.update.yaml that names it
as `param`; every event has a mapping (refused ones refuse unconditionally); the
the manual's table is the one rendered from the tables.
"""

from __future__ import annotations

import typing
from pathlib import Path

from openai.types.beta.realtime import realtime_client_event as beta_events
from openai.types.realtime import realtime_client_event as ga_events
from openai.types.realtime import realtime_response_create_params_param as response_param
from openai.types.realtime import realtime_session_create_request_param as session_param
from typing_extensions import is_typeddict

from livegate.mapping import load_mappings, policy

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = load_mappings()
TABLE = MAPPINGS.tables["session_fields"]
CLASSIFIED = {row["path"]: kind for kind, rows in TABLE.items() for row in rows}


def _fields(typed: typing.Any, prefix: str = "", depth: int = 0) -> set[str]:
    """Dotted paths of a TypedDict's fields, into the audio settings (the other objects are classified whole)."""
    out: set[str] = set()
    for name, hint in typing.get_type_hints(typed).items():
        path = f"{prefix}{name}"
        out.add(path)
        if depth < 4 and name in ("audio", "input", "output", "transcription", "turn_detection"):
            for candidate in (hint, *typing.get_args(hint)):
                for inner in (candidate, *typing.get_args(candidate)):
                    if is_typeddict(inner):
                        out |= _fields(inner, f"{path}.", depth + 1)
    return out


def test_every_sdk_session_field_is_classified() -> None:
    fields = _fields(session_param.RealtimeSessionCreateRequestParam)
    assert "audio.output.speed" in fields and "audio.input.turn_detection" in fields
    def covered(field: str) -> bool:  # a container of classified fields, or a variant's `type`
        return (field in CLASSIFIED or field.removesuffix(".type") in CLASSIFIED
                or any(path.startswith(f"{field}.") for path in CLASSIFIED))

    missing = sorted(field for field in fields if not covered(field))
    assert not missing, f"session fields with no row in tables.session_fields: {missing}"


def test_refused_fields_have_a_refusal_rule() -> None:
    rules = (ROOT / "mappings" / "client" / "session.update.yaml").read_text()
    for row in TABLE["refused"]:
        assert f"param: session.{row['path']}" in rules, row["path"]


def test_every_row_says_how_or_why() -> None:
    for section in ("session_fields", "response_fields", "client_events"):
        for kind, rows in MAPPINGS.tables[section].items():
            assert kind in policy.CLASSES, (section, kind)
            for row in rows or []:
                assert row.get("how") if kind in ("mapped", "approximated") else row.get("why"), (section, row)


def test_every_sdk_response_field_is_classified() -> None:
    classified = {row["path"] for rows in MAPPINGS.tables["response_fields"].values() for row in rows or []}
    fields = set(typing.get_type_hints(response_param.RealtimeResponseCreateParamsParam))
    assert fields == classified, f"unclassified: {sorted(fields - classified)}, unknown: {sorted(classified - fields)}"


def _event_types(module: typing.Any) -> set[str]:
    union = typing.get_args(module.RealtimeClientEvent)[0]
    return {typing.get_args(m.model_fields["type"].annotation)[0] for m in typing.get_args(union)}


def test_every_client_event_is_classified_and_handled_as_it_says() -> None:
    table = MAPPINGS.tables["client_events"]
    classified = {row["type"]: kind for kind, rows in table.items() for row in rows or []}
    assert _event_types(ga_events) | _event_types(beta_events) == set(classified)
    beta_reshapes = MAPPINGS.dialects["beta"]["from_client"]
    for event_type, kind in classified.items():
        handled = event_type in MAPPINGS.client or event_type in beta_reshapes
        assert handled, f"{event_type}: no mapping in client/ and no dialect reshape"
        if kind == "refused":  # refused by an unconditional first rule
            first = (ROOT / "mappings" / "client" / f"{event_type}.yaml").read_text().split("rules:", 1)[1]
            assert "refuse:" in first.split("- name:")[1] and "when:" not in first.split("- name:")[1], event_type


def test_the_manual_table_is_rendered_from_the_tables() -> None:
    readme = (ROOT / "docs" / "compatibility" / "acceptance.md").read_text()
    start, end = readme.index(policy.BEGIN), readme.index(policy.END) + len(policy.END)
    assert readme[start:end] == policy.render(MAPPINGS.tables), \
        "the acceptance table is stale: run `python -m livegate.docgen`"


def test_the_manual_state_tables_are_rendered_from_state_yaml() -> None:
    readme = (ROOT / "docs" / "mapping" / "reference.md").read_text()
    start, end = readme.index(policy.STATE_BEGIN), readme.index(policy.STATE_END) + len(policy.STATE_END)
    assert readme[start:end] == policy.render_state(policy.state_data()), \
        "the session-state tables are stale: run `python -m livegate.docgen`"
