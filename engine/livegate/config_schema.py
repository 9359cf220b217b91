"""The config file's schema (schemas/config.schema.json): key checks, type checks and the reference docs.

The schema is the one list of keys livegate reads, each with its meaning and default. `check()` walks a
parsed config along it before anything is built:
- an unknown key is a ConfigError with a did-you-mean (`general_setings` must not silently give an open
  gateway), except in the blocks LiteLLM also reads (`x-litellm-block`), where a key that is no near-miss of
  a livegate key is LiteLLM's own: warned and dropped;
- `os.environ/NAME` strings are read from the environment (an unset variable is an error naming the key);
- then JSON Schema checks the types, and an error names the key and what was expected.
`render_reference()` writes the configuration reference of the docs from the same file, so it cannot drift.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from functools import cache
from typing import Any

import jsonschema

from livegate.paths import SCHEMAS_DIR

ENV_PREFIX = "os.environ/"
log = logging.getLogger("livegate.config")


class ConfigError(ValueError):
    """A config problem, phrased for the person who wrote the file."""


@cache
def schema() -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "config.schema.json").read_text())


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A subschema with its `$ref` followed (the referring schema's own keywords win)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Any = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def known_keys(*path: str) -> tuple[str, ...]:
    """The keys the schema declares for the object at `path` (e.g. `known_keys("livegate_settings")`)."""
    node = schema()
    for key in path:
        node = _resolve(node)
        node = node["items"] if key == "[]" else node["properties"][key]
    return tuple(_resolve(node).get("properties", {}))


def suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(known)}"


def _where(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _env(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]
    return value


def _walk(value: Any, node: dict[str, Any], path: tuple[str | int, ...], foreign_ok: bool) -> Any:
    """A copy of `value` holding only declared keys, environment references read; unknown keys reported."""
    node = _resolve(node)
    if isinstance(value, dict) and "properties" in node:
        declared: dict[str, Any] = node["properties"]
        foreign_ok = bool(node.get("x-litellm-block", False))
        known = tuple(declared)
        kept = {}
        for key, item in value.items():
            if key in declared:
                kept[key] = _walk(item, declared[key], (*path, key), foreign_ok)
                continue
            near = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.8)
            if foreign_ok and not near:
                log.warning("%s.%s is not used by livegate (a LiteLLM setting?); ignored", _where(path), key)
                continue
            raise ConfigError(f"{_where((*path, str(key)))}: unknown key{suggest(str(key), known)}")
        return kept
    if isinstance(value, list) and "items" in node:
        return [_walk(item, node["items"], (*path, i), False) for i, item in enumerate(value)]
    if node.get("type") == "object" and isinstance(value, dict):
        return value  # free-form (model_info, gemini_features): checked by their own owners
    return _env(value, _where(path)) if path else value


def _expected(node: dict[str, Any]) -> str:
    """What a value of `node` must be, in words."""
    node = _resolve(node)
    if "x-expected" in node:
        return str(node["x-expected"])
    kind = node.get("type")
    words = {"string": "a string", "boolean": "true or false", "integer": "an integer", "number": "a number",
             "object": "a mapping", "array": "a list"}
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(words.get(str(k), "a value") for k in kinds)
    if node.get("exclusiveMinimum") == 0 and text in ("an integer", "a number"):
        text = f"a positive {text.split()[-1]}"
    elif "exclusiveMinimum" in node:
        text += f" > {node['exclusiveMinimum']:g}"
    elif "minimum" in node:
        text += f" >= {node['minimum']:g}"
    return text


def check(data: Any, source: str = "<config>") -> dict[str, Any]:
    """The config with only livegate's keys, environment references read; ConfigError on any problem."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping")
    root = schema()
    top = tuple(root["properties"])
    for key in data:
        if key not in top and key not in root["x-litellm-top-level"]:
            raise ConfigError(f"{key}: unknown top-level key{suggest(str(key), top)}")
    cleaned = _walk({k: v for k, v in data.items() if k in top}, root, (), False)
    error = next(iter(sorted(_validator().iter_errors(cleaned), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        path = tuple(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            raise ConfigError(f"{_where((*path, missing)) or missing}: required")
        got = "" if _resolve(error.schema).get("x-secret") else f" (got {json.dumps(error.instance)[:60]})"
        raise ConfigError(f"{_where(path) or source}: expected {_expected(error.schema)}{got}")
    return cleaned


# -- the reference ---------------------------------------------------------------------------------

def _rows(node: dict[str, Any], prefix: str, rows: list[tuple[str, str, str, str]]) -> None:
    node = _resolve(node)
    expanded: set[str] = set()  # a definition shared by siblings (litellm_params, livegate_params) is listed once
    for key, child in node.get("properties", {}).items():
        ref = child.get("$ref")
        child = _resolve(child)
        name = f"{prefix}.{key}" if prefix else key
        if ref in expanded:
            rows.append((name, child.get("type", ""), "", " ".join(child.get("description", "").split())))
            continue
        if ref:
            expanded.add(ref)
        if child.get("type") == "array" and "items" in child:
            rows.append((name, "list", "", child.get("description", "")))
            _rows(child["items"], f"{name}[]", rows)
            continue
        default = child.get("default")
        shown = "" if default is None else json.dumps(default)
        kind = child.get("type", "")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        if child.get("x-secret"):
            kind += ", secret"
        rows.append((name, kind, shown, " ".join(child.get("description", "").split())))
        if "properties" in child:
            _rows(child, name, rows)


def render_reference() -> str:
    """The configuration reference as Markdown: every key, its type, default and meaning."""
    rows: list[tuple[str, str, str, str]] = []
    _rows(schema(), "", rows)
    lines = [
        "<!-- generated from schemas/config.schema.json by `python -m livegate.config_schema`; do not edit -->",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, kind, default, text in rows:
        escaped = text.replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {f'`{default}`' if default else ''} | {escaped} |")
    lines += ["", "Blocks LiteLLM also reads (`general_settings`, `litellm_settings`, `router_settings`, "
              "`litellm_params`) accept LiteLLM's other settings with a warning. LiteLLM's other top-level "
              "sections are accepted and ignored: "
              + ", ".join(f"`{k}`" for k in schema()["x-litellm-top-level"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
