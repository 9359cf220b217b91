"""Client events: parse, check against schemas/openai/, and phrase failures as OpenAI `error` events.

Schemas are per dialect: `schemas/openai/beta/<type>.json` when the beta shape differs, else the GA
file. A failing keyword becomes the error `code`, the failing field's JSON path the `param`.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from referencing import Registry, Resource

from livegate.errors import error_event
from livegate.paths import SCHEMAS_DIR

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


def _path(parts: list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class ClientEventValidator:
    """Turns raw client frames into checked event dicts, or into an OpenAI error event."""

    def __init__(self, schemas_dir: Path = SCHEMAS_DIR, max_frame_bytes: int = 15 * 1024 * 1024) -> None:
        self.dir = schemas_dir / "openai"
        self.max_frame_bytes = max_frame_bytes
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator | None] = {}

    @cached_property
    def _registry(self) -> Registry:
        resources = []
        for path in sorted(self.dir.rglob("*.json")):
            schema = json.loads(path.read_text())
            resources.append((schema["$id"], Resource.from_contents(schema)))
        return Registry().with_resources(resources)

    def known_types(self, dialect: str = "ga") -> set[str]:
        types = {p.stem for p in self.dir.glob("*.json") if p.stem != "common"}
        if dialect != "ga":
            types |= {p.stem for p in (self.dir / dialect).glob("*.json") if p.stem != "common"}
        return types

    def _validator(self, event_type: str, dialect: str) -> jsonschema.protocols.Validator | None:
        key = (event_type, dialect)
        if key not in self._validators:
            candidates = [self.dir / dialect / f"{event_type}.json"] if dialect != "ga" else []
            candidates.append(self.dir / f"{event_type}.json")
            path = next((p for p in candidates if p.is_file() and "/" not in event_type), None)
            validator = None
            if path is not None:
                schema = json.loads(path.read_text())
                validator = jsonschema.Draft202012Validator(schema, registry=self._registry)
            self._validators[key] = validator
        return self._validators[key]

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
                event = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return None, error_event(f"The message is not valid JSON: {exc}. It was not processed.",
                                         code="invalid_json")
        if not isinstance(event, dict):
            return None, error_event("A client event must be a JSON object.", code="invalid_type")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        event_type = event.get("type")
        if not isinstance(event_type, str):
            code = "missing_required_parameter" if event_type is None else "invalid_type"
            return None, error_event("Missing or invalid required parameter: 'type'.", code=code,
                                     param="type", event_id=event_id)
        validator = self._validator(event_type, dialect)
        if validator is None:
            return None, error_event(
                f"Invalid value: '{event_type}'. Supported values are: "
                + ", ".join(f"'{t}'" for t in sorted(self.known_types(dialect))) + ".",
                code="invalid_value", param="type", event_id=event_id)
        error = jsonschema.exceptions.best_match(validator.iter_errors(event))
        if error is None:
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
            message = (f"Invalid value: {json.dumps(error.instance)} for '{param}'. Supported values are: "
                       + ", ".join(json.dumps(v) for v in values) + ".")
        else:
            param = _path(path)
            message = f"Invalid value for '{param}': {error.message}."
        return error_event(message, code=code, param=param or None, event_id=event_id)
