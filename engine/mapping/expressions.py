"""Expressions and templates.

A string value that starts with `=` is a JMESPath expression (`"=event.audio"`); `==` escapes a literal
leading `=`. Everything else is a literal. In a template, an expression that yields null drops its
field (or list element), and an object with a false `$when` expression is dropped as a whole.

Everything is compiled once at load, into Python closures for the common JMESPath node kinds (every
audio frame evaluates a dozen of these), with JMESPath's interpreter behind the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath import visitor

from livegate.mapping.errors import MappingError
from livegate.mapping.yamlpos import Located, Path_

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


Compiled = Callable[["Runtime", Any], Any]


def _equals(x: Any, y: Any) -> bool:
    """JMESPath equality: a boolean never equals a number (Python says True == 1)."""
    numbers = (int, float)
    if isinstance(x, numbers) and isinstance(y, numbers) and isinstance(x, bool) is not isinstance(y, bool):
        return False
    return x == y


def _compile_node(node: dict[str, Any]) -> Compiled:
    """A JMESPath AST node as a Python closure `(runtime, value) -> result`.

    The common node kinds (fields, paths, boolean logic, equality, literals, function calls,
    multi-selects) become direct Python; the rest (projections, filters, slices...) are handed to
    JMESPath's own interpreter. Results are identical (tests/test_expressions.py checks this).
    """
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        key = node["value"]
        return lambda rt, value: value.get(key) if isinstance(value, dict) else None
    if kind == "current":
        return lambda rt, value: value
    if kind == "literal":
        literal = node["value"]
        if isinstance(literal, list | dict):
            return lambda rt, value: copy.deepcopy(literal)
        return lambda rt, value: literal
    if kind in ("subexpression", "pipe"):
        steps = [_compile_node(child) for child in children]

        def chain(rt: Runtime, value: Any) -> Any:
            for step in steps:
                value = step(rt, value)
            return value

        return chain
    if kind == "not_expression":
        inner = _compile_node(children[0])
        return lambda rt, value: not truthy(inner(rt, value))
    if kind == "and_expression":
        left, right = _compile_node(children[0]), _compile_node(children[1])

        def both(rt: Runtime, value: Any) -> Any:
            result = left(rt, value)
            return right(rt, value) if truthy(result) else result

        return both
    if kind == "or_expression":
        left, right = _compile_node(children[0]), _compile_node(children[1])

        def either(rt: Runtime, value: Any) -> Any:
            result = left(rt, value)
            return result if truthy(result) else right(rt, value)

        return either
    if kind == "comparator" and node["value"] in ("eq", "ne"):
        left, right = _compile_node(children[0]), _compile_node(children[1])
        if node["value"] == "eq":
            return lambda rt, value: _equals(left(rt, value), right(rt, value))
        return lambda rt, value: not _equals(left(rt, value), right(rt, value))
    if kind == "index_expression" and children[1]["type"] == "index":
        base, index = _compile_node(children[0]), children[1]["value"]

        def at(rt: Runtime, value: Any) -> Any:
            items = base(rt, value)
            if not isinstance(items, list):
                return None
            try:
                return items[index]
            except IndexError:
                return None

        return at
    if kind == "function_expression" and all(child["type"] != "expref" for child in children):
        name, args = node["value"], [_compile_node(child) for child in children]
        return lambda rt, value: rt.helpers.call_function(name, [arg(rt, value) for arg in args])
    if kind == "multi_select_dict":
        pairs = [(child["value"], _compile_node(child["children"][0])) for child in children]
        return lambda rt, value: None if value is None else {key: part(rt, value) for key, part in pairs}
    if kind == "multi_select_list":
        parts = [_compile_node(child) for child in children]
        return lambda rt, value: None if value is None else [part(rt, value) for part in parts]
    return lambda rt, value: rt.interpreter.visit(node, value)


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

    __slots__ = ("_fn", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._fn = _compile_node(_negation_over_path(jmespath.compile(source).parsed))

    def __call__(self, runtime: Runtime, scope: Scope) -> Any:
        return self._fn(runtime, scope)

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

