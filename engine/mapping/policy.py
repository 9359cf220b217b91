"""The acceptance table of the README, rendered from mappings/tables.yaml (client_events, session_fields,
response_fields). `python -m livegate.mapping.policy` prints it; tests/test_session_fields.py checks the
README holds exactly this text between its markers."""

from __future__ import annotations

from typing import Any

BEGIN = "<!-- acceptance-table: rendered from mappings/tables.yaml by `python -m livegate.mapping.policy` -->"
END = "<!-- /acceptance-table -->"
CLASSES = ("mapped", "approximated", "ignored", "refused")
SECTIONS = (("client_events", "type", "event {}"), ("session_fields", "path", "session.{}"),
            ("response_fields", "path", "response.{}"))


def render(tables: dict[str, Any]) -> str:
    lines = [BEGIN, "", "| client event or field | class | how, or why not |", "|---|---|---|"]
    for section, key, label in SECTIONS:
        for kind in CLASSES:
            for row in tables[section].get(kind) or []:
                text = str(row.get("how") or row.get("why")).replace("|", "\\|")
                lines.append(f"| `{label.format(row[key]).removeprefix('event ')}` | {kind} | {text} |")
    return "\n".join([*lines, "", END])


if __name__ == "__main__":
    from livegate.mapping import load_mappings

    print(render(load_mappings().tables))
