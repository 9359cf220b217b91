"""The strict management API: every request body and query string is checked against its entry of
schemas/management.schema.json before anything is done.

- an unknown field is a 400 `unknown_field` naming it, with a did-you-mean (`max_budgett` -> `max_budget`);
  a LiteLLM field livegate does not support is named with the reason (`tpm_limit`);
- a wrong type is a 400 `invalid_type` naming the field and what was expected;
- a value out of range or pattern is a 400 `invalid_value`; a missing field 400 `missing_required_parameter`;
- every error says that nothing was created or changed (handlers validate before they write).

Query parameters arrive as strings: they are read as the type their schema declares (integer, number,
boolean) first, so `?page=x` is "page: expected an integer".
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from typing import Any

import jsonschema
from starlette.datastructures import QueryParams

from livegate.paths import SCHEMAS_DIR
from livegate.server.admin import ApiError

NOTHING_DONE = "nothing was created or changed"
_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


@cache
def _document() -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "management.schema.json").read_text())


@cache
def _validator(endpoint: str, part: str) -> jsonschema.Draft202012Validator:
    doc = _document()
    schema = {"$defs": doc["$defs"], **doc["endpoints"][endpoint][part]}
    return jsonschema.Draft202012Validator(schema)


def endpoints() -> list[str]:
    """Every endpoint the schema declares ("POST /key/generate", ...)."""
    return list(_document()["endpoints"])


def fields(endpoint: str, part: str = "body") -> tuple[str, ...]:
    return tuple(_document()["endpoints"][endpoint][part].get("properties", {}))


def check_body(endpoint: str, body: Any) -> dict[str, Any]:
    """The body, checked; ApiError(400) naming the first problem."""
    if not isinstance(body, dict):
        raise ApiError(400, f"The body must be a JSON object; {NOTHING_DONE}.", "invalid_json")
    _raise_first(_validator(endpoint, "body"), body)
    return body


def check_query(endpoint: str, params: QueryParams) -> dict[str, Any]:
    """The query parameters as the declared types, checked; ApiError(400) naming the first problem."""
    declared = _document()["endpoints"][endpoint].get("query", {}).get("properties", {})
    values: dict[str, Any] = {}
    for name in params:
        values[name] = _typed(params[name], _resolve(declared.get(name, {})))
    _raise_first(_validator(endpoint, "query"), values, where="query parameter")
    return values


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _resolve(_document()["$defs"][ref.rsplit("/", 1)[-1]])
    return node


def _typed(value: str, schema: dict[str, Any]) -> Any:
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    try:
        if "integer" in kinds:
            return int(value)
        if "number" in kinds:
            return float(value)
    except ValueError:
        return value  # the check names the expected type
    if "boolean" in kinds and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _path(error: jsonschema.ValidationError, extra: str | None = None) -> str:
    text = ""
    for part in [*error.absolute_path, *([extra] if extra else [])]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unknown(error: jsonschema.ValidationError) -> list[str]:
    known = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
    return sorted(set(error.instance) - known) if isinstance(error.instance, dict) else []


def _priority(error: jsonschema.ValidationError) -> tuple[int, int]:
    rank = {"additionalProperties": 0, "required": 1, "type": 2}.get(str(error.validator), 3)
    return rank, len(error.absolute_path)


def _raise_first(validator: jsonschema.Draft202012Validator, instance: Any, where: str = "field") -> None:
    errors = sorted(validator.iter_errors(instance), key=_priority)
    if not errors:
        return
    error = errors[0]
    if error.validator == "anyOf" and error.context:  # the reason from the alternative the value looks like
        error = sorted(error.context, key=lambda e: (e.validator == "type", _priority(e)[0],
                                                     -len(e.absolute_path)))[0]
    kind = str(error.validator)
    if kind == "additionalProperties":
        name = _unknown(error)[0]
        param = _path(error, name)
        known = tuple(error.schema.get("properties", {}))
        reason = _document()["x-litellm-unsupported"].get(name)
        if reason:
            message = f"{param}: LiteLLM's {where}, not supported by livegate ({reason})"
        else:
            message = f"{param}: unknown {where} ({_suggestion(name, known)})"
        raise ApiError(400, f"{message}; {NOTHING_DONE}.", "unknown_field", param)
    if kind == "required":
        name = str(error.message).split("'")[1]
        param = _path(error, name)
        raise ApiError(400, f"{param}: required; {NOTHING_DONE}.", "missing_required_parameter", param)
    param = _path(error) or "body"
    if kind == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        wanted = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in expected)
        raise ApiError(400, f"{param}: expected {wanted}, got {_describe(error.instance)}; {NOTHING_DONE}.",
                       "invalid_type", param)
    raise ApiError(400, f"{param}: {_value_problem(error)}; {NOTHING_DONE}.", "invalid_value", param)


def _suggestion(name: str, known: tuple[str, ...]) -> str:
    if not known:
        return "this takes none"
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else "known: " + ", ".join(known)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    kind = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}.get(type(value))
    shown = json.dumps(value)[:60] if isinstance(value, str | int | float) else ""
    return f"{kind} ({shown})" if shown else str(kind)


def _value_problem(error: jsonschema.ValidationError) -> str:
    kind, limit = str(error.validator), error.validator_value
    if kind == "minimum":
        return f"must be at least {limit}"
    if kind == "maximum":
        return f"must be at most {limit}"
    if kind == "enum":
        return "expected one of " + ", ".join(json.dumps(v) for v in limit)
    if kind == "pattern":
        described = error.schema.get("description") if isinstance(error.schema, dict) else None
        return f"expected {described}" if described else f"does not match {limit}"
    if kind in ("minLength", "minItems"):
        return "must not be empty" if limit == 1 else f"needs at least {limit}"
    if kind in ("maxLength", "maxItems"):
        return f"is too long (at most {limit})"
    return str(error.message)
