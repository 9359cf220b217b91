"""Expressions and templates.

A string value that starts with `=` is a JMESPath expression (`"=event.audio"`); `==` escapes a literal
leading `=`. Everything else is a literal. In a template, an expression that yields null drops its
field (or list element), and an object with a false `$when` expression is dropped as a whole.

Everything is compiled once at load, into Python closures (every audio frame evaluates a dozen of
these), with JMESPath's interpreter behind only the calls taking `&expression` arguments.
"""

from __future__ import annotations

import copy
import operator
import re
import weakref
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions
from jmespath import visitor

from livegate.mapping.errors import MappingError, MappingWarning
from livegate.mapping.yamlpos import Located, Path_

MARKER = "="
WHEN_KEY = "$when"
# Lint warns above this many characters of code (whitespace runs count as one, the text inside quotes
# as nothing: a message's prose is not logic). Past it, an expression is easier read as named parts.
LONG_EXPRESSION = 120
_RAW_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")

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

    Every node kind but function calls taking `&expression` arguments (sort_by, max_by...) becomes
    direct Python; those are handed to JMESPath's own interpreter. Results are identical
    (tests/test_expressions.py checks this against the reference interpreter).
    """
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        return _compile_field_path((node["value"],))
    if kind == "current":
        return lambda rt, value: value
    if kind == "literal":
        literal = node["value"]
        if isinstance(literal, list | dict):
            return lambda rt, value: copy.deepcopy(literal)
        return lambda rt, value: literal
    if kind == "subexpression" and all(child["type"] == "field" for child in children):
        return _compile_field_path(tuple(child["value"] for child in children))
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
    if kind == "comparator" and node["value"] in ("eq", "ne") and children[1]["type"] == "literal" \
            and isinstance(children[1]["value"], str):  # `x == 'text'`: a string equals only that string
        left, text = _compile_node(children[0]), children[1]["value"]
        if node["value"] == "eq":
            return lambda rt, value: left(rt, value) == text
        return lambda rt, value: left(rt, value) != text
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
        return _compile_call(node["value"], [_compile_node(child) for child in children])
    if kind == "comparator":  # ordering: numbers and strings only, anything else is null
        left, right, compare = _compile_node(children[0]), _compile_node(children[1]), _ORDERING[node["value"]]

        def ordered(rt: Runtime, value: Any) -> Any:
            a, b = left(rt, value), right(rt, value)
            if _comparable(a) and _comparable(b):
                return compare(a, b)
            return None

        return ordered
    if kind in ("projection", "value_projection", "filter_projection"):
        return _compile_projection(kind, [_compile_node(child) for child in children])
    if kind == "flatten":
        base = _compile_node(children[0])

        def flatten(rt: Runtime, value: Any) -> Any:
            items = base(rt, value)
            if not isinstance(items, list):
                return None
            merged: list[Any] = []
            for item in items:
                if isinstance(item, list):
                    merged.extend(item)
                else:
                    merged.append(item)
            return merged

        return flatten
    if kind == "identity":
        return lambda rt, value: value
    if kind == "index_expression" and children[1]["type"] == "slice":
        base, cut = _compile_node(children[0]), slice(*children[1]["children"])

        def sliced(rt: Runtime, value: Any) -> Any:
            items = base(rt, value)
            return items[cut] if isinstance(items, list) else None

        return sliced
    if kind == "multi_select_dict":
        pairs = [(child["value"], _compile_node(child["children"][0])) for child in children]
        return lambda rt, value: None if value is None else {key: part(rt, value) for key, part in pairs}
    if kind == "multi_select_list":
        parts = [_compile_node(child) for child in children]
        return lambda rt, value: None if value is None else [part(rt, value) for part in parts]
    return lambda rt, value: rt.interpreter.visit(node, value)


def compile_node(node: dict[str, Any]) -> Compiled:
    """A node of an `Expression.ast` compiled on its own (mapping/plan.py evaluates a `when` part by part)."""
    return _compile_node(node)


def _compile_field_path(keys: tuple[str, ...]) -> Compiled:
    """`a.b.c`: one closure walking the keys (the most common expression; most read `session` or `event`).

    Values are JSON data, where only objects have `.get`: a field of anything else (null, a string, a
    list, a number) is null, by the AttributeError, which costs nothing on the common path."""
    if len(keys) == 1:
        (only,) = keys

        def one(rt: Runtime, value: Any) -> Any:
            try:
                return value.get(only)
            except AttributeError:
                return None

        return one
    if len(keys) == 2:
        first, second = keys

        def two(rt: Runtime, value: Any) -> Any:
            try:
                return value.get(first).get(second)
            except AttributeError:
                return None

        return two

    def walk(rt: Runtime, value: Any) -> Any:
        try:
            for key in keys:
                value = value.get(key)
        except AttributeError:
            return None
        return value

    return walk


_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}


def _comparable(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, int | float) and not isinstance(x, bool))


def _compile_projection(kind: str, parts: list[Compiled]) -> Compiled:
    """`list[*].rhs`, `object.*.rhs` and `list[?condition].rhs`: the rhs per element, nulls left out."""
    base, rhs = parts[0], parts[1]
    if kind == "filter_projection":
        condition = parts[2]

        def filtered(rt: Runtime, value: Any) -> Any:
            items = base(rt, value)
            if not isinstance(items, list):
                return None
            out = []
            for item in items:
                if truthy(condition(rt, item)):
                    result = rhs(rt, item)
                    if result is not None:
                        out.append(result)
            return out

        return filtered

    def projected(rt: Runtime, value: Any) -> Any:
        items = base(rt, value)
        if kind == "value_projection":
            if not isinstance(items, dict):
                return None
            items = list(items.values())
        elif not isinstance(items, list):
            return None
        out = []
        for item in items:
            result = rhs(rt, item)
            if result is not None:
                out.append(result)
        return out

    return projected


def _compile_call(name: str, args: list[Compiled]) -> Compiled:
    """A function call bound to its implementation, skipping JMESPath's dispatch on the common path.

    The argument types are checked as JMESPath does (by type name); any call that would not pass, or a
    function with element-typed or variadic arguments, goes through `call_function`, which raises the
    same errors as the reference interpreter.
    """
    bound: list[Any] = [None, None, None]  # helpers class, implementation, allowed type names per argument

    def bind(helpers: jmespath.functions.Functions) -> None:
        spec = type(helpers).FUNCTION_TABLE.get(name)
        allowed: tuple[frozenset[str] | None, ...] | None = None
        if spec is not None and len(spec["signature"]) == len(args):
            checks: list[frozenset[str] | None] = []
            for arg in spec["signature"]:
                types = arg["types"]
                if arg.get("variadic") or any("-" in t for t in types):
                    break
                checks.append(frozenset(n for t in types for n in jp_functions.REVERSE_TYPES_MAP[t]) or None)
            else:
                allowed = tuple(checks)
        bound[:] = [type(helpers), spec["function"] if spec else None, allowed]

    def call(rt: Runtime, value: Any) -> Any:
        helpers = rt.helpers
        if bound[0] is not type(helpers):
            bind(helpers)
        values = [arg(rt, value) for arg in args]
        allowed = bound[2]
        if allowed is not None:
            for current, names in zip(values, allowed, strict=True):
                if names is not None and type(current).__name__ not in names:
                    break
            else:
                return bound[1](helpers, *values)
        return helpers.call_function(name, values)

    # One and two arguments (nearly every call on the audio path) without the list and the loop.
    if len(args) == 1:
        (first,) = args

        def call_1(rt: Runtime, value: Any) -> Any:
            helpers = rt.helpers
            if bound[0] is not type(helpers):
                bind(helpers)
            a = first(rt, value)
            allowed = bound[2]
            if allowed is not None and (allowed[0] is None or type(a).__name__ in allowed[0]):
                return bound[1](helpers, a)
            return helpers.call_function(name, [a])

        return call_1
    if len(args) == 2:
        first, second = args

        def call_2(rt: Runtime, value: Any) -> Any:
            helpers = rt.helpers
            if bound[0] is not type(helpers):
                bind(helpers)
            a, b = first(rt, value), second(rt, value)
            allowed = bound[2]
            if allowed is not None and (allowed[0] is None or type(a).__name__ in allowed[0]) \
                    and (allowed[1] is None or type(b).__name__ in allowed[1]):
                return bound[1](helpers, a, b)
            return helpers.call_function(name, [a, b])

        return call_2
    return call


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

    __slots__ = ("_fn", "ast", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.ast = _negation_over_path(jmespath.compile(source).parsed)  # read by mapping/index.py
        self._fn = _compile_node(self.ast)

    def __call__(self, runtime: Runtime, scope: Scope) -> Any:
        return self._fn(runtime, scope)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def code_length(source: str) -> int:
    """The length lint measures: whitespace runs as one character, quoted text ('...') as just its quotes."""
    return len(_RAW_STRING.sub("''", " ".join(source.split())))


def compile_expression(doc: Located, path: Path_, value: str) -> Expression:
    """Compile `"=..."` at `path` in `doc`, turning a syntax error into a positioned MappingError (and
    noting lint's warning on `doc` when the expression is long)."""
    source = value[len(MARKER) :]
    length = code_length(source)
    if length > LONG_EXPRESSION:
        doc.warnings.append(MappingWarning(doc.position(path), (
            f"expression of {length} characters (over {LONG_EXPRESSION}, quoted text aside): name its parts "
            "with `let`, or move them to a fragment (mappings/shared/) or a shape")))
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
    # In the order the maintainer wrote: (key, how, part): a value kept as it is, a container copied
    # (no two messages share a mutable object), or a build whose null result drops the field.
    fields: list[tuple[str, int, Any]] = []
    for key, item in value.items():
        if key == WHEN_KEY:
            continue
        if not _is_constant(item):
            fields.append((key, _BUILT, compile_template(doc, (*path, key), item)))
        else:
            fields.append((key, _COPIED if isinstance(item, dict | list) else _KEPT, item))

    def build(runtime: Runtime, scope: Scope) -> dict[str, Any] | None:
        if when is not None and not truthy(when(runtime, scope)):
            return None
        built = {}
        for key, how, part in fields:
            if how is _BUILT:
                result = part(runtime, scope)
                if result is not None:
                    built[key] = None if result is EXPLICIT_NULL else result
            else:
                built[key] = part if how is _KEPT else _copy(part)
        return built

    _OBJECT_FIELDS[build] = {key: part for key, how, part in fields if how is _BUILT}
    return build


_KEPT, _COPIED, _BUILT = 0, 1, 2
# An object template's built fields by key (mapping/wire.py serialises them itself), for as long as it lives.
_OBJECT_FIELDS: weakref.WeakKeyDictionary[Build, dict[str, Build]] = weakref.WeakKeyDictionary()


def object_fields(build: Build) -> dict[str, Build] | None:
    """The built (non-constant) fields of an object template by key; None for any other template (a whole
    message written as one expression is an Expression, which has no weak reference)."""
    return None if isinstance(build, Expression) else _OBJECT_FIELDS.get(build)


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


_SIZED = (str, list, dict)


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, and empty strings, lists and objects are false; 0 is true."""
    if value is True:
        return True
    if value is None or value is False:
        return False
    return bool(value) if isinstance(value, _SIZED) else True

