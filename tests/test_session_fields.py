"""The session-field classification (tables.session_fields in mappings/tables.yaml) is complete and true.

Every field of the openai SDK's session type is classified; every refused field has a rule in
client/session.update.yaml that names it as `param`; the README's table shows every row.
"""

from __future__ import annotations

import typing
from pathlib import Path

from openai.types.realtime import realtime_session_create_request_param as session_param
from typing_extensions import is_typeddict

from livegate.mapping import load_mappings

ROOT = Path(__file__).resolve().parent.parent
TABLE = load_mappings().tables["session_fields"]
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


def test_ignored_fields_say_why_and_the_readme_shows_every_row() -> None:
    readme = (ROOT / "README.md").read_text()
    for kind, rows in TABLE.items():
        for row in rows:
            assert row.get("how") or row.get("why"), row
            assert f"`{row['path']}`" in readme, f"README's session-field table lacks {row['path']} ({kind})"
