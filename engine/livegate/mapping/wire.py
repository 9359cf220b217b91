"""Client events as pre-serialised JSON: an emitted message's template, with what the session decides spliced in.

An audio delta is the same JSON every time but for its `event_id` and its `delta`: the response, the item and
the indexes change once per response, not once per chunk. For an emitted client message written as an object
with a fixed `type`, the loader also compiles a `WireTemplate`. Its fields are constants (serialised at load),
fields the session state decides (the same reading of `session`, `config` and `tables` as mapping/plan.py:
serialised once per session state, and kept for the states with the same values where they read the
session, as plans are), and fields the input decides (serialised per message). What
a translator in wire mode (`Translator(wire=True)`, the server's) sends is then a few byte strings joined
around the `event_id`, instead of a dict built field by field, copied to put the `event_id` first, and
serialised whole.

The text is the one `orjson.dumps` gives for the dict the template builds (the same fields in the same order,
a field whose value comes out null left out, an explicit null kept): tests/test_wire.py holds the two
byte-identical over random sessions. A message needing its dialect's reshaping (the beta dialect renames the
audio delta) takes the dict path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from livegate.mapping.expressions import EXPLICIT_NULL, Build, Expression, Generated, Runtime
from livegate.mapping.plan import Read, conditions_of, session_reads


@dataclasses.dataclass(frozen=True, slots=True)
class _Hole:
    key: bytes  # `"name":`
    build: Build
    decided: bool  # the session state decides it (serialised once per state)


class WireTemplate:
    """The serialised form of one emitted object (see the module docstring)."""

    __slots__ = ("_fields", "_reads", "type")

    def __init__(self, event_type: str, fields: tuple[bytes | _Hole, ...]) -> None:
        self.type = event_type
        self._fields = fields
        self._reads: tuple[Read, ...] | bool | None = False  # not worked out yet

    @property
    def reads(self) -> tuple[Read, ...] | None:
        """What its decided fields read of the session: a layout holds for any state with the same values there
        (None: a field reads the session otherwise, and a layout holds for its one state). Worked out at the
        first layout: loading compiles every template."""
        if self._reads is False:
            paths: list[tuple[str, ...]] = []
            for field in self._fields:
                if isinstance(field, _Hole) and field.decided:
                    reads = session_reads(field.build.ast) if isinstance(field.build, Expression) else None
                    if reads is None:
                        self._reads = None
                        return None
                    paths.extend(reads)
            self._reads = tuple((path, False) for path in dict.fromkeys(paths))
        return self._reads  # type: ignore[return-value]

    def layout(self, runtime: Runtime, scope: dict[str, Any]) -> tuple[bytes | _Hole, ...]:
        """The fields for this session state: constants and decided fields merged into runs of serialised
        text; the holes the input fills left as they are. Raises what a decided field's expression raises."""
        out: list[bytes | _Hole] = []
        run: list[bytes] = []
        for field in self._fields:
            if isinstance(field, bytes):
                run.append(field)
            elif field.decided:
                text = _field(field, runtime, scope)
                if text is not None:
                    run.append(text)
            else:
                if run:
                    out.append(b",".join(run))
                    run = []
                out.append(field)
        if run:
            out.append(b",".join(run))
        return tuple(out)

    @staticmethod
    def render(layout: tuple[bytes | _Hole, ...], runtime: Runtime, scope: dict[str, Any],
               event_id: Any) -> str:
        """The message's JSON text, its `event_id` first. `event_id` is called after the input's fields are
        evaluated (ids are drawn in the order the dict path draws them)."""
        parts: list[bytes] = [b'{"event_id":', b""]  # the id's place; one join makes the text (it is kilobytes)
        for field in layout:
            if isinstance(field, bytes):
                parts += (b",", field)
            else:
                text = _field(field, runtime, scope)
                if text is not None:
                    parts += (b",", text)
        parts[1] = orjson.dumps(event_id())
        parts.append(b"}")
        return b"".join(parts).decode()


def _field(hole: _Hole, runtime: Runtime, scope: dict[str, Any]) -> bytes | None:
    build = hole.build
    value = build._fn(runtime, scope) if isinstance(build, Generated) else build(runtime, scope)
    if value is None:  # a null result drops the field, as the dict template does
        return None
    return hole.key + (b"null" if value is EXPLICIT_NULL else orjson.dumps(value))


def compile_wire(value: Any, build_of: Any) -> WireTemplate | None:
    """The wire template of an emitted message `value` (its raw YAML), or None when it has none: not an object,
    no constant string `type` as its first field, an `event_id` of its own, or a `$when` (the whole object may drop).
    `build_of(key)` is the compiled template of field `key` (the loader's own)."""
    if not isinstance(value, dict) or "$when" in value or "event_id" in value:
        return None
    event_type = value.get("type")
    if not isinstance(event_type, str) or event_type.startswith("=") or next(iter(value)) != "type":
        return None  # `type` first: observers read it off the text (translation/observer.py message_type)
    fields: list[bytes | _Hole] = []
    for key, item in value.items():
        name = orjson.dumps(key) + b":"
        if _constant(item):
            fields.append(name + orjson.dumps(item))
        else:
            build = build_of(key)
            fields.append(_Hole(name, build, isinstance(build, Expression) and _decided(build)))
    return WireTemplate(event_type, tuple(fields))


def _constant(item: Any) -> bool:
    """As the dict template reads it (expressions._is_constant): a string starting with `=` is built, even an
    escaped `==` one (which builds to its literal)."""
    if isinstance(item, str):
        return not item.startswith("=")
    if isinstance(item, dict):
        return "$when" not in item and all(_constant(v) for v in item.values())
    if isinstance(item, list):
        return all(_constant(v) for v in item)
    return True


def _decided(expression: Expression) -> bool:
    """Whether the session state alone decides the expression (the plan's reading of a condition)."""
    parts = conditions_of(expression).parts
    return len(parts) == 1 and parts[0][1]
