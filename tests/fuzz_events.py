"""Hypothesis strategies for OpenAI Realtime client events of every type, in either dialect, generated from
the openai SDK's own pydantic types (their JSON schema), then mutated: a field dropped (required ones
too), a value swapped for one of the wrong type, a string for garbage. Most events are therefore close to
valid, which is what reaches the mappings' rules (random dictionaries are refused at the schema).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from hypothesis import strategies as st
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.realtime import RealtimeClientEvent as GAClientEvent
from pydantic import TypeAdapter

MAX_DEPTH = 6
_PCM = base64.b64encode(struct.pack("<160h", *([0, 2000, 0, -2000] * 40))).decode()
# A 1x1 JPEG, so image rules see a real image sometimes.
_JPEG = ("data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP////////////////////////////////////////"
         "//////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgB"
         "AQABPxA=")

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)  # lone surrogates: test_fuzz's invalid frames
scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False) \
    | text
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
    text, inner, max_size=2), max_leaves=5)


def _strings(name: str) -> st.SearchStrategy[Any]:
    """Strings a field of this name might hold: the meaningful ones sometimes, text otherwise."""
    if name in ("audio", "delta"):
        return st.sampled_from([_PCM, "", "AAAA", "not base64!"]) | text
    if name == "image_url":
        return st.sampled_from([_JPEG, "data:image/gif;base64,R0lGODlh", "https://example.invalid/x.png"])
    if name in ("item_id", "previous_item_id", "call_id", "id"):
        return st.sampled_from(["root", "item_1", "call_1"]) | text
    if name in ("arguments", "output"):
        return st.sampled_from(['{"a": 1}', "{}", "[", ""]) | text
    return text


class SchemaStrategies:
    """One strategy per `$defs` entry, built lazily (the schemas are recursive)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.root = schema
        self._built: dict[str, st.SearchStrategy[Any]] = {}

    def events(self) -> st.SearchStrategy[dict[str, Any]]:
        return self.of(self.root, "event", 0)

    def of(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Any]:
        if depth > MAX_DEPTH:
            return scalars
        if "$ref" in schema:
            ref = schema["$ref"].rsplit("/", 1)[-1]
            key = f"{ref}@{min(depth, MAX_DEPTH)}"
            if key not in self._built:
                self._built[key] = st.deferred(lambda: self.of(self.defs[ref], name, depth + 1))
            return self._built[key]
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        for union in ("anyOf", "oneOf"):
            if union in schema:
                return st.one_of([self.of(s, name, depth + 1) for s in schema[union]])
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.of({**schema, "type": k}, name, depth) for k in kind])
        if kind == "object":
            properties = schema.get("properties") or {}
            if not properties:
                return st.dictionaries(text, junk, max_size=2)
            required = [p for p in schema.get("required", []) if p in properties]
            return st.fixed_dictionaries(
                {p: self.of(properties[p], p, depth + 1) for p in required},
                optional={p: self.of(s, p, depth + 1) for p, s in properties.items() if p not in required})
        if kind == "array":
            return st.lists(self.of(schema.get("items") or {}, name, depth + 1), max_size=3)
        if kind == "string":
            return _strings(name)
        if kind == "integer":
            return st.integers(-3, 100_000)
        if kind == "number":
            return st.floats(-2, 10_000, allow_nan=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return junk


@st.composite
def _mutated(draw: st.DrawFn, events: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    event = draw(events)
    for _ in range(draw(st.integers(0, 2))):
        path = _paths(event)
        if not path:
            break
        container, key = draw(st.sampled_from(path))
        if draw(st.booleans()):
            if isinstance(container, dict):
                container.pop(key, None)
            else:
                del container[key]
        else:
            container[key] = draw(junk)
    return event


def _paths(value: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value under `value`, except the event's `type` (kept so the event
    reaches its mappings)."""
    out: list[tuple[Any, Any]] = []
    stack = [(value, True)]
    while stack:
        node, top = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            if top and key == "type":
                continue
            out.append((node, key))
            stack.append((child, False))
    return out


_SCHEMAS = {"ga": GAClientEvent, "beta": BetaClientEvent}


def client_events(dialect: str) -> st.SearchStrategy[dict[str, Any]]:
    """Client events of every type of `dialect`, mostly near-valid."""
    return _mutated(SchemaStrategies(TypeAdapter(_SCHEMAS[dialect]).json_schema()).events())
