"""Expressions and templates.

A string value that starts with `=` is a JMESPath expression (`"=event.audio"`); `==` escapes a literal
leading `=`. Everything else is a literal. In a template, an expression that yields null drops its
field (or list element), and an object with a false `$when` expression is dropped as a whole.

Everything is compiled once at load. Plain field paths (`event.audio`, `session.response.id`) skip the
JMESPath interpreter and read the dicts directly: most values on the audio path are of that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath import visitor

from engine.mapping.errors import MappingError
from engine.mapping.yamlpos import Located, Path_

MARKER = "="
WHEN_KEY = "$when"

Scope = dict[str, Any]


class _ExplicitNull:
    """Returned by `field()` for a field that is present but null: the template keeps it as null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXPLICIT_NULL"


EXPLICIT_NULL = _ExplicitNull()
Build = Callable[["Runtime", Scope], Any]


class Runtime:
    """Per-translator evaluation machinery: the interpreter carrying this session's helper functions."""

    __slots__ = ("helpers", "interpreter")

    def __init__(self, helpers: jmespath.functions.Functions) -> None:
        self.helpers = helpers
        self.interpreter = visitor.TreeInterpreter(jmespath.Options(custom_functions=helpers))


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(MARKER) and not value.startswith(MARKER * 2)


def _field_chain(node: dict[str, Any]) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"] when the expression is nothing but field access."""
    if node["type"] == "field":
        return [node["value"]]
    if node["type"] == "subexpression":
        keys: list[str] = []
        for child in node["children"]:
            chain = _field_chain(child)
            if chain is None:
                return None
            keys.extend(chain)
        return keys
    return None


def _getter(keys: list[str]) -> Callable[[Scope], Any]:
    if len(keys) == 1:
        key = keys[0]
        return lambda scope: scope.get(key)

    def get(scope: Scope) -> Any:
        value: Any = scope
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return get


def _negation_over_path(node: dict[str, Any]) -> dict[str, Any]:
    """Read `!a.b` as `!(a.b)`, not JMESPath's `(!a).b` (a field of a boolean: always null)."""
    children = [_negation_over_path(c) if isinstance(c, dict) else c for c in node.get("children", [])]
    node = {**node, "children": children}
    if node["type"] in ("subexpression", "index_expression") and children and children[0]["type"] == "not_expression":
        inner = {**node, "children": [children[0]["children"][0], *children[1:]]}
        return {"type": "not_expression", "children": [_negation_over_path(inner)]}
    return node


class Expression:
    """A compiled expression; call it with a runtime and a scope."""

    __slots__ = ("_ast", "_get", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._ast = _negation_over_path(jmespath.compile(source).parsed)
        chain = _field_chain(self._ast)
        self._get = _getter(chain) if chain else None

    def __call__(self, runtime: Runtime, scope: Scope) -> Any:
        if self._get is not None:
            return self._get(scope)
        return runtime.interpreter.visit(self._ast, scope)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(doc: Located, path: Path_, value: str) -> Expression:
    """Compile `"=..."` at `path` in `doc`, turning a syntax error into a positioned MappingError."""
    source = value[len(MARKER) :]
    try:
        return Expression(source)
    except jp_exceptions.ParseError as exc:
        pos = doc.position(path)
        offset = 1 + (1 if doc.quoted(path) else 0) + (exc.lex_position or 0)
        line = doc.source_line(pos.line)
        column = pos.column + offset
        if column > len(line) + 1:  # a folded or multi-line scalar: point at its start instead
            column = pos.column
        raise MappingError(
            pos.__class__(pos.file, pos.line, column),
            f"expression syntax error: {exc.msg} (in {source!r})",
            line,
            column,
        ) from exc
    except jp_exceptions.JMESPathError as exc:
        raise MappingError(doc.position(path), f"invalid expression {source!r}: {exc}") from exc


def compile_template(doc: Located, path: Path_, value: Any) -> Build:
    """Compile a literal-or-expression tree into a builder `(runtime, scope) -> value | None`."""
    if is_expression(value):
        return compile_expression(doc, path, value)
    if isinstance(value, str) and value.startswith(MARKER * 2):
        literal = value[1:]
        return lambda runtime, scope: literal
    if isinstance(value, dict):
        return _compile_object(doc, path, value)
    if isinstance(value, list):
        return _compile_list(doc, path, value)
    return lambda runtime, scope: value


def _compile_object(doc: Located, path: Path_, value: dict[str, Any]) -> Build:
    when = compile_expression(doc, (*path, WHEN_KEY), value[WHEN_KEY]) if WHEN_KEY in value else None
    constants: dict[str, Any] = {}
    dynamic: list[tuple[str, Build]] = []
    for key, item in value.items():
        if key == WHEN_KEY:
            continue
        if _is_constant(item):
            constants[key] = item
        else:
            dynamic.append((key, compile_template(doc, (*path, key), item)))
    order = [k for k in value if k != WHEN_KEY]

    def build(runtime: Runtime, scope: Scope) -> dict[str, Any] | None:
        if when is not None and not truthy(when(runtime, scope)):
            return None
        built = {key: _copy(item) for key, item in constants.items()}
        for key, part in dynamic:
            result = part(runtime, scope)
            if result is not None:
                built[key] = None if result is EXPLICIT_NULL else result
        if dynamic and constants:  # keep the key order the maintainer wrote
            return {key: built[key] for key in order if key in built}
        return built

    return build


def _compile_list(doc: Located, path: Path_, value: list[Any]) -> Build:
    if all(_is_constant(item) for item in value):
        return lambda runtime, scope: _copy(value)
    parts = [compile_template(doc, (*path, i), item) for i, item in enumerate(value)]

    def build(runtime: Runtime, scope: Scope) -> list[Any]:
        out = []
        for part in parts:
            result = part(runtime, scope)
            if result is not None:
                out.append(None if result is EXPLICIT_NULL else result)
        return out

    return build


def _is_constant(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(MARKER)
    if isinstance(value, dict):
        return WHEN_KEY not in value and all(_is_constant(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_constant(v) for v in value)
    return True


def _copy(value: Any) -> Any:
    """Fresh containers for constants, so no two emitted messages share a mutable object."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    return bool(value) if isinstance(value, str | list | dict) else True

