"""The README's tables that copy mappings/, rendered so they cannot drift: the acceptance table (from
tables.yaml: client_events, session_fields, response_fields) and the session state (from state.yaml:
keys, lifecycle states, transitions). `python -m livegate.mapping.policy` prints both; the suite checks
the README holds exactly this text between each pair of markers."""

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


STATE_BEGIN = "<!-- state-tables: rendered from mappings/state.yaml by `python -m livegate.mapping.policy` -->"
STATE_END = "<!-- /state-tables -->"


def _names(values: list[str]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _declared(name: str, spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, type, meaning) of a declared key or field, then of what it holds (mapping/fields.py)."""
    meaning = str(spec.get("meaning", ""))
    if "schema" in spec:
        meaning += f" Its fields: as schemas/{spec['schema']} declares."
    rows = [(name, spec["type"], meaning)]
    for field, inner in (spec.get("fields") or {}).items():
        rows += _declared(f"{name}.{field}", inner)
    if "values" in spec:
        rows += _declared(f"{name}.<id>", spec["values"])
    if "items" in spec:
        rows += _declared(f"{name}[]", spec["items"])
    return rows


def render_state(state: dict[str, Any]) -> str:
    """The declared session keys (and their fields), then the lifecycle's states and transitions."""
    lines = [STATE_BEGIN, "", "| key | type | meaning | written by |", "|---|---|---|---|"]
    for key, spec in state["keys"].items():
        writers = ", ".join(spec.get("writers") or [])
        for path, kind, meaning in _declared(key, spec):
            text = meaning.replace("|", "\\|")
            lines.append(f"| `{path}` | {kind} | {text} | {writers if path == key else ''} |")
    lifecycle = state["lifecycle"]
    lines += ["", "| state | holds when (the first that holds) |", "|---|---|"]
    lines += [f"| `{name}` | `{condition.removeprefix('=')}` |" for name, condition in lifecycle["states"].items()]
    lines += ["", "| from | input | to |", "|---|---|---|"]
    for t in lifecycle["transitions"]:
        lines.append(f"| {_names([t['from']] if isinstance(t['from'], str) else t['from'])} | {_names(t['on'])} "
                     f"| `{t['to']}` |")
    return "\n".join([*lines, "", STATE_END])


def state_data() -> dict[str, Any]:
    """state.yaml as plain data (keys verbatim: YAML 1.1 would read a transition's `on:` as true)."""
    from livegate.mapping.yamlpos import Located
    from livegate.paths import MAPPINGS_DIR

    path = MAPPINGS_DIR / "state.yaml"
    data: dict[str, Any] = Located(str(path), path.read_text()).data
    return data


if __name__ == "__main__":
    from livegate.mapping import load_mappings

    print(render(load_mappings().tables))
    print()
    print(render_state(state_data()))
