"""Client events: parse, check against schemas/openai/, and phrase failures as OpenAI `error` events.

Schemas are per dialect: `schemas/openai/beta/<type>.json` when the beta shape differs, else the GA
file. A failing keyword becomes the error `code`, the failing field's JSON path the `param`.

Every audio chunk passes through here, so events are checked by code compiled from those schemas
(fastjsonschema); jsonschema runs only on failure, to find and word the error. The known types are a
fixed table built at startup: a client's `type` string never reaches the filesystem or a cache, and
nesting is bounded before any recursive check runs.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import orjson
from referencing import Registry, Resource

from livegate.paths import SCHEMAS_DIR
from livegate.translation.errors import error_event

_CODES = {
    "required": "missing_required_parameter",
    "additionalProperties": "unknown_parameter",
    "unevaluatedProperties": "unknown_parameter",
    "type": "invalid_type",
    "enum": "invalid_value",
    "const": "invalid_value",
    "minimum": "integer_below_min_value",
    "maximum": "integer_above_max_value",
    "exclusiveMinimum": "integer_below_min_value",
    "exclusiveMaximum": "integer_above_max_value",
    "minLength": "string_too_short",
    "maxLength": "string_above_max_length",
    "minItems": "array_too_short",
    "maxItems": "array_above_max_length",
    "pattern": "invalid_value",
    "format": "invalid_value",
}

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}

_CONTAINERS = (dict, list)


# Deeper than any real event (tool parameter schemas included), far below what orjson serialises (254
# levels, the Gemini setup adds a few) and Python's recursion limit (jsonschema recurses per level).
MAX_DEPTH = 64
_ECHO_CHARS = 64  # the most of a client's string echoed in a message


_EVENT_ID = re.compile(rb'\s*\{\s*(?:"type"\s*:\s*"[^"\\]{0,64}"\s*,\s*)?"event_id"\s*:\s*("(?:[^"\\]|\\.){0,256}")')


def _salvage_event_id(raw: str | bytes) -> str | None:
    """The `event_id` of a frame that does not parse (too deep, truncated), when it leads the object.

    Only a leading `event_id` (first key, or second after `type`) is trusted: anything later could sit
    inside a nested value.
    """
    found = _EVENT_ID.match((raw.encode() if isinstance(raw, str) else raw)[:512])
    try:
        return orjson.loads(found.group(1)) if found else None
    except orjson.JSONDecodeError:  # a bad escape
        return None


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + f"... ({len(text)} characters)"


def _echo_long(text: str) -> str:
    return text if len(text) <= 8 * _ECHO_CHARS else text[: 8 * _ECHO_CHARS] + f"... ({len(text)} characters)"


def _too_deep(value: Any, limit: int) -> list[Any] | None:
    """The path to the first container nested deeper than `limit`, or None; iterative, no recursion."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return list(path)
        if isinstance(node, dict):
            stack.extend((v, depth + 1, (*path, k)) for k, v in node.items() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, (*path, i)) for i, v in enumerate(node) if isinstance(v, dict | list))
    return None


@functools.cache  # compiling costs milliseconds: once per schema file per process, the files being a fixed set
def _compile(path: Path, documents_json: str) -> Callable[[Any], Any]:
    documents = json.loads(documents_json)
    return fastjsonschema.compile(json.loads(path.read_text()), handlers={"https": documents.__getitem__},
                                  use_formats=False)


def _path(parts: list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class ClientEventValidator:
    """Turns raw client frames into checked event dicts, or into an OpenAI error event."""

    def __init__(self, schemas_dir: Path = SCHEMAS_DIR, max_frame_bytes: int = 15 * 1024 * 1024,
                 max_depth: int = MAX_DEPTH) -> None:
        self.dir = schemas_dir / "openai"
        self.max_frame_bytes = max_frame_bytes
        self.max_depth = max_depth
        # dialect -> event type -> schema file: the only types ever looked up, fixed at startup
        self._files: dict[str, dict[str, Path]] = {}
        self._compiled: dict[tuple[str, str], Callable[[Any], Any]] = {}
        self._wording: dict[tuple[str, str], jsonschema.protocols.Validator] = {}

    @cached_property
    def _documents(self) -> dict[str, dict[str, Any]]:
        """Every schema under schemas/openai/, by its $id."""
        documents = {}
        for path in sorted(self.dir.rglob("*.json")):
            schema = json.loads(path.read_text())
            documents[schema["$id"]] = schema
        return documents

    @cached_property
    def _registry(self) -> Registry:
        return Registry().with_resources((uri, Resource.from_contents(s)) for uri, s in self._documents.items())

    def _table(self, dialect: str) -> dict[str, Path]:
        table = self._files.get(dialect)
        if table is None:
            table = {p.stem: p for p in self.dir.glob("*.json") if p.stem != "common"}
            if dialect != "ga":
                table.update({p.stem: p for p in (self.dir / dialect).glob("*.json") if p.stem != "common"})
            self._files[dialect] = table
        return table

    def known_types(self, dialect: str = "ga") -> set[str]:
        return set(self._table(dialect))

    def _schema(self, event_type: str, dialect: str) -> dict[str, Any] | None:
        path = self._table(dialect).get(event_type)
        return None if path is None else json.loads(path.read_text())

    def _check(self, event_type: str, dialect: str) -> Callable[[Any], Any] | None:
        """The compiled check for a known type (raises on an invalid event); None for an unknown type."""
        key = (event_type, dialect)
        check = self._compiled.get(key)
        if check is None:
            schema = self._schema(event_type, dialect)
            if schema is None:
                return None  # not cached: unknown types are answered from the fixed table each time
            check = _compile(self._table(dialect)[event_type], json.dumps(self._documents, sort_keys=True))
            self._compiled[key] = check
        return check

    def _validator(self, event_type: str, dialect: str) -> jsonschema.protocols.Validator | None:
        """The jsonschema validator that words an error (built on the first failure of a type)."""
        key = (event_type, dialect)
        if key not in self._wording:
            schema = self._schema(event_type, dialect)
            if schema is None:
                return None
            self._wording[key] = jsonschema.Draft202012Validator(schema, registry=self._registry)
        return self._wording[key]

    def parse(self, raw: str | bytes | dict[str, Any], dialect: str = "ga") -> tuple[dict[str, Any] | None,
                                                                                   dict[str, Any] | None]:
        """(event, None) when valid, else (None, error event)."""
        if isinstance(raw, dict):
            event: Any = raw
        else:
            if len(raw) > self.max_frame_bytes:
                return None, error_event(
                    f"Message of {len(raw)} bytes exceeds the limit of {self.max_frame_bytes} bytes; "
                    "it was not processed.", code="message_too_large")
            try:
                event = orjson.loads(raw)  # bounded itself: deeper than 1024 levels is a JSONDecodeError
            except orjson.JSONDecodeError as exc:
                return None, error_event(f"The message is not valid JSON: {exc}. It was not processed.",
                                         code="invalid_json", event_id=_salvage_event_id(raw))
        if not isinstance(event, dict):
            return None, error_event("A client event must be a JSON object.", code="invalid_type")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        event_type = event.get("type")
        if not isinstance(event_type, str):
            code = "missing_required_parameter" if event_type is None else "invalid_type"
            return None, error_event("Missing or invalid required parameter: 'type'.", code=code,
                                     param="type", event_id=event_id)
        check = self._compiled.get((event_type, dialect)) or self._check(event_type, dialect)
        if check is None:
            return None, error_event(
                f"Invalid value: '{_echo(event_type)}'. Supported values are: "
                + ", ".join(f"'{t}'" for t in sorted(self._table(dialect))) + ".",
                code="invalid_value", param="type", event_id=event_id)
        deep = None
        for value in event.values():  # (a loop: a generator costs more, on every audio chunk, which is flat)
            if isinstance(value, _CONTAINERS):
                deep = _too_deep(event, self.max_depth)
                break
        if deep is not None:
            return None, error_event(
                f"The event nests objects and arrays more than {self.max_depth} levels deep (at "
                f"'{_echo(_path(deep[: self.max_depth // 8]))}...'); it was not processed.",
                code="nesting_too_deep", param=_echo(_path(deep[:1])) or None, event_id=event_id)
        try:
            check(event)
        except fastjsonschema.JsonSchemaException:
            pass
        else:
            return event, None
        validator = self._validator(event_type, dialect)
        assert validator is not None
        error = jsonschema.exceptions.best_match(validator.iter_errors(event))
        if error is None:  # the two disagree (never seen): jsonschema, the reference, decides
            return event, None
        return None, self._describe(error, event_id)

    @staticmethod
    def _describe(error: jsonschema.ValidationError, event_id: str | None) -> dict[str, Any]:
        path = list(error.absolute_path)
        code = _CODES.get(str(error.validator), "invalid_value")
        if error.validator == "required":
            missing = next((name for name in error.validator_value if name not in error.instance), None)
            param = _path([*path, missing]) if missing else _path(path)
            message = f"Missing required parameter: '{param}'."
        elif error.validator in ("additionalProperties", "unevaluatedProperties"):
            allowed = set(error.schema.get("properties", {}))
            extra = sorted(k for k in error.instance if k not in allowed) if isinstance(error.instance, dict) else []
            param = _path([*path, extra[0]]) if extra else _path(path)
            message = f"Unknown parameter: '{param}'."
        elif error.validator == "type":
            param = _path(path)
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            got = _JSON_TYPES.get(type(error.instance), "a value")
            message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
        elif error.validator in ("enum", "const"):
            param = _path(path)
            values = error.validator_value if error.validator == "enum" else [error.validator_value]
            message = (f"Invalid value: {_echo(json.dumps(error.instance))} for '{param}'. Supported values are: "
                       + ", ".join(json.dumps(v) for v in values) + ".")
        else:
            param = _path(path)
            message = f"Invalid value for '{param}': {_echo_long(error.message)}."
        # Paths hold the client's own keys: bounded, like every echoed value.
        return error_event(_echo_long(message), code=code, param=_echo_long(param) or None, event_id=event_id)
