"""Expressions and templates.

A string value that starts with `=` is a JMESPath expression (`"=event.audio"`); `==` escapes a literal
leading `=`. Everything else is a literal. In a template, an expression that yields null drops its
field (or list element), and an object with a false `$when` expression is dropped as a whole.

Each expression is parsed at load and made into one Python function when first evaluated (mapping/
codegen.py; every audio frame evaluates a dozen of them), with JMESPath's interpreter behind only the
calls taking `&expression` arguments.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath import visitor

from livegate.mapping.codegen import (
    BUILT,
    COPIED,
    KEPT,
    SIZED,
    Compiled,
    ListTemplate,
    ObjectTemplate,
    copy_json,
    generate,
    generate_template,
)
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


def compile_node(node: dict[str, Any]) -> Expression:
    """A node of an `Expression.ast` on its own (mapping/plan.py evaluates a `when` part by part)."""
    return Expression("part of a when", node)


def _negation_over_path(node: dict[str, Any]) -> dict[str, Any]:
    """Read `!a.b` as `!(a.b)`, not JMESPath's `(!a).b` (a field of a boolean: always null)."""
    children = [_negation_over_path(c) if isinstance(c, dict) else c for c in node.get("children", [])]
    node = {**node, "children": children}
    if node["type"] in ("subexpression", "index_expression") and children and children[0]["type"] == "not_expression":
        inner = {**node, "children": [children[0]["children"][0], *children[1:]]}
        return {"type": "not_expression", "children": [_negation_over_path(inner)]}
    return node


class Generated:
    """Made into one Python function (mapping/codegen.py) on first use, or by `make_unmade` in the server's
    idle time: loading generates nothing (it would add about half a second to a cold start)."""

    __slots__ = ("__weakref__", "_fn")

    def __init__(self) -> None:
        self._fn: Compiled = self._first
        _UNMADE.add(self)

    def __call__(self, runtime: Runtime, scope: Scope) -> Any:
        return self._fn(runtime, scope)

    def function(self) -> Compiled:
        """The generated function itself (made now if need be), for callers that skip this wrapper."""
        if self._fn == self._first:
            self.make()
        return self._fn

    def make(self) -> None:
        self._fn = self._generate()
        _UNMADE.discard(self)

    def make_idle(self) -> None:
        """What the idle time makes of it (mapping/plan.py's Condition makes its parts instead)."""
        self.make()

    def _generate(self) -> Compiled:
        raise NotImplementedError

    def _first(self, runtime: Runtime, scope: Scope) -> Any:
        self.make()
        return self._fn(runtime, scope)


class Expression(Generated):
    """An expression; call it with a runtime and a scope."""

    __slots__ = ("ast", "source")

    def __init__(self, source: str, ast: dict[str, Any] | None = None) -> None:
        self.source = source
        # read by mapping/index.py and plan.py; given for a part of another expression's
        self.ast = _negation_over_path(jmespath.compile(source).parsed) if ast is None else ast
        super().__init__()

    def _generate(self) -> Compiled:
        return generate(self.ast, self.source)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def code_length(source: str) -> int:
    """The length lint measures: whitespace runs as one character, quoted text ('...') as just its quotes."""
    return len(_RAW_STRING.sub("''", " ".join(source.split())))


def compile_expression(doc: Located, path: Path_, value: str, kind: type[Expression] = Expression) -> Expression:
    """Compile `"=..."` at `path` in `doc`, turning a syntax error into a positioned MappingError (and
    noting lint's warning on `doc` when the expression is long)."""
    source = value[len(MARKER) :]
    length = code_length(source)
    if length > LONG_EXPRESSION:
        doc.warnings.append(MappingWarning(doc.position(path), (
            f"expression of {length} characters (over {LONG_EXPRESSION}, quoted text aside): name its parts "
            "with `let`, or move them to a fragment (mappings/shared/) or a shape")))
    try:
        return kind(source)
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
            fields.append((key, BUILT, compile_template(doc, (*path, key), item)))
        else:
            fields.append((key, COPIED if isinstance(item, dict | list) else KEPT, item))
    return Template(ObjectTemplate(None if when is None else when.ast, tuple(fields)), path)


def _compile_list(doc: Located, path: Path_, value: list[Any]) -> Build:
    if all(_is_constant(item) for item in value):
        return lambda runtime, scope: copy_json(value)
    return Template(ListTemplate(tuple(compile_template(doc, (*path, i), item) for i, item in enumerate(value))),
                    path)


class Template(Generated):
    """An object or list template as one function: its expressions and nested templates inlined, a field
    whose value comes out null left out."""

    __slots__ = ("name", "shape")

    def __init__(self, shape: ObjectTemplate | ListTemplate, path: Path_) -> None:
        self.shape = shape
        self.name = ".".join(str(p) for p in path) or "template"
        super().__init__()
        parts = shape.parts if isinstance(shape, ListTemplate) else [part for _, how, part in shape.fields
                                                                        if how == BUILT]
        _UNMADE.difference_update(parts)  # inlined into this one; made on their own only if used alone

    def _generate(self) -> Compiled:
        return generate_template(self.shape, _describe, self.name, EXPLICIT_NULL)


# What has not been made into Python yet. A first use makes it (about 0.2 ms each); the server makes the rest
# in its idle time after start (server/app.py), so a process's first turns do not pay for hundreds at once.
_UNMADE: weakref.WeakSet[Generated] = weakref.WeakSet()


def make_unmade(count: int) -> int:
    """Make up to `count` expressions and templates into Python; how many are still unmade."""
    for _ in range(count):
        try:
            unmade = _UNMADE.pop()
        except KeyError:  # none left (servers sharing a process, as tests run them, share the set)
            break
        unmade.make_idle()
    return len(_UNMADE)


def _describe(part: Any) -> ObjectTemplate | ListTemplate | dict[str, Any] | None:
    if isinstance(part, Expression):
        return part.ast
    return part.shape if isinstance(part, Template) else None


def object_fields(build: Build) -> dict[str, Build] | None:
    """The built (non-constant) fields of an object template by key (mapping/wire.py serialises them
    itself); None for any other template (a whole message written as one expression, say)."""
    if isinstance(build, Template) and isinstance(build.shape, ObjectTemplate):
        return {key: part for key, how, part in build.shape.fields if how == BUILT}
    return None


def _is_constant(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(MARKER)
    if isinstance(value, dict):
        return WHEN_KEY not in value and all(_is_constant(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_constant(v) for v in value)
    return True


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, and empty strings, lists and objects are false; 0 is true."""
    if value is True:
        return True
    if value is None or value is False:
        return False
    return bool(value) if isinstance(value, SIZED) else True

