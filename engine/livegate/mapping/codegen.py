"""JMESPath expressions as Python source: one function per expression, its AST inlined.

Every audio frame evaluates a dozen expressions and a turn's edge some hundreds, so an expression is
one Python function with its fields, tests and calls written out in it, not a tree of closures calling
one another. Calls taking `&expression` arguments (sort_by, max_by...) are handed to JMESPath's own
interpreter. Results are identical (tests/test_expressions.py checks them against the reference
interpreter). Nothing is generated at load: mapping/expressions.py generates a function on first use, or in
the server's idle time after start.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import functions as jp_functions

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}
SIZED = (str, list, dict)  # the types whose emptiness makes them false


def equals(x: Any, y: Any) -> bool:
    """JMESPath equality: a boolean never equals a number (Python says True == 1)."""
    numbers = (int, float)
    if isinstance(x, numbers) and isinstance(y, numbers) and isinstance(x, bool) is not isinstance(y, bool):
        return False
    return x == y


def comparable(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, int | float) and not isinstance(x, bool))


def copy_json(value: Any) -> Any:
    """Fresh containers, so no two results share a mutable object."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


class FunctionCall:
    """A call site bound to its implementation, skipping JMESPath's dispatch on the common path.

    The argument types are checked as JMESPath does (by type name); a call that would not pass, or a
    function with element-typed or variadic arguments, goes through `call_function`, which raises the same
    errors as the reference interpreter. Bound per helpers class (a translator's functions). A helper that
    is a plain function of its arguments names it (its `direct` attribute, mapping/functions.py's `pure`):
    the call goes straight to it, without the helpers method in between (the audio checks, per chunk)."""

    __slots__ = ("allowed", "arity", "direct", "function", "kind", "name")

    def __init__(self, name: str, arity: int) -> None:
        self.name, self.arity = name, arity
        self.kind: type | None = None
        self.function: Callable[..., Any] | None = None
        self.direct: Callable[..., Any] | None = None
        self.allowed: tuple[frozenset[str] | None, ...] | None = None

    def bind(self, helpers: jp_functions.Functions) -> None:
        spec = type(helpers).FUNCTION_TABLE.get(self.name)
        allowed: tuple[frozenset[str] | None, ...] | None = None
        if spec is not None and len(spec["signature"]) == self.arity:
            checks: list[frozenset[str] | None] = []
            for arg in spec["signature"]:
                types = arg["types"]
                if arg.get("variadic") or any("-" in t for t in types):
                    break
                checks.append(frozenset(n for t in types for n in jp_functions.REVERSE_TYPES_MAP[t]) or None)
            else:
                allowed = tuple(checks)
        self.kind, self.function, self.allowed = type(helpers), spec["function"] if spec else None, allowed
        self.direct = getattr(self.function, "direct", None)


Compiled = Callable[[Any, Any], Any]  # (runtime, value) -> result


def generate(node: dict[str, Any], name: str = "expression") -> Compiled:
    """`node` (a JMESPath AST) as one Python function `(rt, value) -> result`."""
    source = _Source()
    return source.function(source.emit(node, "value", 1), name)


def python_source(expression: str) -> str:
    """The Python an expression becomes, for reading: `python -c "from livegate.mapping.codegen import *;
    print(python_source('event.a[?b].c'))"`. (Functions do not keep their source: it would cost memory.)"""
    source = _Source()
    result = source.emit(jmespath.compile(expression).parsed, "value", 1)
    return source.text(result, "expression")


KEPT, COPIED, BUILT = 0, 1, 2  # how an object template's field is made: kept, a copied constant, built


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectTemplate:
    """An object template: its `$when` (an AST, or None) and its fields in order, (key, how, part)."""

    when: dict[str, Any] | None
    fields: tuple[tuple[str, int, Any], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ListTemplate:
    parts: tuple[Any, ...]


Describe = Callable[[Any], "ObjectTemplate | ListTemplate | dict[str, Any] | None"]


def generate_template(template: ObjectTemplate | ListTemplate, describe: Describe, name: str,
                      explicit_null: Any) -> Compiled:
    """A message template as one function `(rt, scope) -> value`, its expressions and nested templates
    inlined. `describe(part)` tells what a built part is: a template, an expression's AST, or None (a
    function of its own, called as it is)."""
    source = _Source(describe)
    result = source.template(template, "value", 1)
    return source.function(result, name, EXPLICIT_NULL=explicit_null)


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return cleaned if cleaned[:1].isalpha() else f"e_{cleaned}"


def truthy_test(name: str, value: str | None = None) -> str:
    """JMESPath truthiness of a name, as an inline Python test (false, null, '', [] and {} are false);
    `value`: an expression bound to `name` (`:=`) as the test begins."""
    first = name if value is None else f"({name} := {value})"
    return (f"({first} is True or ({name} is not None and {name} is not False and "
            f"(not isinstance({name}, SIZED) or bool({name}))))")


# The globals of every generated function: what they call besides their constants.
_GLOBALS: dict[str, Any] = {"SIZED": SIZED, "_equals": equals, "_comparable": comparable, "_copy": copy_json}


def closure(definition: str, name: str, constants: dict[str, Any], namespace: dict[str, Any], where: str) -> Any:
    """The function `name` that `definition` (its `def`, at the left margin) defines, compiled in an outer
    function closing over `constants` and called once: every function compiled in `namespace` then shares it
    as globals, where a dict of its own per function cost about 1 MB of the server's memory. The outer function
    is bound in a dict of this call's own, not in `namespace`: two threads compiling at once (a test's
    translator beside a server's idle-time generation) must not take each other's."""
    inner = "".join("    " + line + "\n" for line in definition.splitlines())
    text = f"def _make({', '.join(constants)}):\n{inner}    return {name}\n"
    made: dict[str, Any] = {}
    exec(compile(text, where, "exec"), namespace, made)  # source made from parsed mappings
    return made["_make"](**constants)


class _Source:
    """The function's lines, its temporaries and the constants it reads."""

    def __init__(self, describe: Describe | None = None) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._count = 0
        self._describe = describe

    def function(self, result: str, name: str, **names: Any) -> Compiled:
        """The lines as the body of `def <name>(rt, value)` returning `result`, compiled, closing over its
        constants (and `names`)."""
        function: Compiled = closure(self.text(result, name), _identifier(name), {**self.constants, **names},
                                     _GLOBALS, f"<mapping {name}>")
        return function

    def text(self, result: str, name: str) -> str:
        body = "\n".join(self.lines)
        return f"def {_identifier(name)}(rt, value):\n{body}\n    return {result}\n"

    def template(self, template: ObjectTemplate | ListTemplate, value: str, depth: int) -> str:
        """Lines building a template of the scope named `value`: a built field whose value is null is left out
        (an explicit null, EXPLICIT_NULL, is kept as null); an object whose `$when` is false is null."""
        result = self.temp()
        if isinstance(template, ListTemplate):
            self.line(depth, f"{result} = []")
            for part in template.parts:
                built = self._part(part, value, depth)
                self.line(depth, f"if {built} is not None:")
                self.line(depth + 1, f"{result}.append(None if {built} is EXPLICIT_NULL else {built})")
            return result
        if template.when is not None:
            when = self.emit(template.when, value, depth)
            self.line(depth, f"if not {truthy_test(when)}:")
            self.line(depth + 1, f"{result} = None")
            self.line(depth, "else:")
            depth += 1
        self.line(depth, f"{result} = {{}}")
        for key, how, part in template.fields:
            if how == BUILT:
                built = self._part(part, value, depth)
                self.line(depth, f"if {built} is not None:")
                self.line(depth + 1, f"{result}[{key!r}] = None if {built} is EXPLICIT_NULL else {built}")
            elif how == COPIED:
                self.line(depth, f"{result}[{key!r}] = _copy({self.constant(part)})")
            else:
                self.line(depth, f"{result}[{key!r}] = {self._literal(part, depth)}")
        return result

    def _part(self, part: Any, value: str, depth: int) -> str:
        described = self._describe(part) if self._describe is not None else None
        if isinstance(described, ObjectTemplate | ListTemplate):
            return self.template(described, value, depth)
        if isinstance(described, dict):  # an expression's AST
            return self.emit(described, value, depth)
        result = self.temp()
        self.line(depth, f"{result} = {self.constant(part)}(rt, {value})")
        return result

    def temp(self) -> str:
        self._count += 1
        return f"t{self._count}"

    def constant(self, value: Any) -> str:
        name = f"k{len(self.constants)}"
        self.constants[name] = value
        return name

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def emit(self, node: dict[str, Any], value: str, depth: int) -> str:
        """Lines computing `node` of the value named `value`; returns the name (or literal) of the result."""
        kind = node["type"]
        children = node.get("children", [])
        if kind == "field":
            return self._path((node["value"],), value, depth)
        if kind == "subexpression" and all(child["type"] == "field" for child in children):
            return self._path(tuple(child["value"] for child in children), value, depth)
        if kind in ("current", "identity"):
            return value
        if kind == "literal":
            return self._literal(node["value"], depth)
        if kind in ("subexpression", "pipe"):
            for child in children:
                value = self.emit(child, value, depth)
            return value
        if kind == "not_expression":
            inner = self.emit(children[0], value, depth)
            result = self.temp()
            self.line(depth, f"{result} = not {truthy_test(inner)}")
            return result
        if kind in ("and_expression", "or_expression"):
            return self._logical(kind, children, value, depth)
        if kind == "comparator":
            return self._comparator(node["value"], children, value, depth)
        if kind == "index_expression" and children[1]["type"] == "index":
            return self._index(children[0], children[1]["value"], value, depth)
        if kind == "function_expression" and all(child["type"] != "expref" for child in children):
            return self._call(node["value"], children, value, depth)
        if kind in ("projection", "value_projection", "filter_projection"):
            return self._projection(kind, children, value, depth)
        if kind in ("multi_select_dict", "multi_select_list"):
            return self._multi_select(kind, children, value, depth)
        if kind == "flatten":
            return self._flatten(children[0], value, depth)
        if kind == "index_expression" and children[1]["type"] == "slice":
            base = self.emit(children[0], value, depth)
            result, cut = self.temp(), self.constant(slice(*children[1]["children"]))
            self.line(depth, f"{result} = {base}[{cut}] if isinstance({base}, list) else None")
            return result
        return self._interpreted(node, value, depth)  # calls with `&expression` arguments

    def _path(self, keys: tuple[str, ...], value: str, depth: int) -> str:
        """`a.b.c`: only objects have `.get`, so a field of anything else (null, a string, a list, a number)
        is null, by the AttributeError, which costs nothing on the common path."""
        result = self.temp()
        reads = "".join(f".get({key!r})" for key in keys)
        self.line(depth, "try:")
        self.line(depth + 1, f"{result} = {value}{reads}")
        self.line(depth, "except AttributeError:")
        self.line(depth + 1, f"{result} = None")
        return result

    def _literal(self, literal: Any, depth: int) -> str:
        if isinstance(literal, list | dict):  # never shared between results
            result = self.temp()
            self.line(depth, f"{result} = _copy({self.constant(literal)})")
            return result
        if literal is None or isinstance(literal, bool | int | str):
            return repr(literal)
        return self.constant(literal)

    def _logical(self, kind: str, children: list[dict[str, Any]], value: str, depth: int) -> str:
        left = self.emit(children[0], value, depth)
        result = self.temp()
        test = truthy_test(left) if kind == "and_expression" else f"not {truthy_test(left)}"
        self.line(depth, f"if {test}:")
        right = self.emit(children[1], value, depth + 1)
        self.line(depth + 1, f"{result} = {right}")
        self.line(depth, "else:")
        self.line(depth + 1, f"{result} = {left}")
        return result

    def _comparator(self, op: str, children: list[dict[str, Any]], value: str, depth: int) -> str:
        left = self.emit(children[0], value, depth)
        right = self.emit(children[1], value, depth)
        result = self.temp()
        if op in ("eq", "ne"):
            literal = children[1]["type"] == "literal" and isinstance(children[1]["value"], str)
            if literal:  # `x == 'text'`: a string equals only that string
                self.line(depth, f"{result} = {left} {'==' if op == 'eq' else '!='} {right}")
            else:
                self.line(depth, f"{result} = {'' if op == 'eq' else 'not '}_equals({left}, {right})")
            return result
        compare = self.constant(_ORDERING[op])  # ordering: numbers and strings only, anything else is null
        self.line(depth, f"{result} = {compare}({left}, {right}) if _comparable({left}) and _comparable({right}) "
                         "else None")
        return result

    def _index(self, base_node: dict[str, Any], index: int, value: str, depth: int) -> str:
        base = self.emit(base_node, value, depth)
        result = self.temp()
        self.line(depth, f"{result} = None")
        self.line(depth, f"if isinstance({base}, list):")
        self.line(depth + 1, "try:")
        self.line(depth + 2, f"{result} = {base}[{index}]")
        self.line(depth + 1, "except IndexError:")
        self.line(depth + 2, "pass")
        return result

    def _call(self, name: str, children: list[dict[str, Any]], value: str, depth: int) -> str:
        call = self.constant(FunctionCall(name, len(children)))
        self.line(depth, f"if {call}.kind is not type(rt.helpers):")
        self.line(depth + 1, f"{call}.bind(rt.helpers)")
        args = [self.emit(child, value, depth) for child in children]
        result = self.temp()
        checks = "".join(f" and (al[{i}] is None or type({arg}).__name__ in al[{i}])" for i, arg in enumerate(args))
        self.line(depth, f"al = {call}.allowed")
        self.line(depth, f"if al is not None{checks}:")
        self.line(depth + 1, f"{result} = {call}.direct({', '.join(args)}) if {call}.direct is not None else "
                             f"{call}.function(rt.helpers{''.join(', ' + arg for arg in args)})")
        self.line(depth, "else:")
        self.line(depth + 1, f"{result} = rt.helpers.call_function({name!r}, [{', '.join(args)}])")
        return result

    def _projection(self, kind: str, children: list[dict[str, Any]], value: str, depth: int) -> str:
        """`list[*].rhs`, `object.*.rhs` and `list[?condition].rhs`: the rhs per element, nulls left out."""
        base = self.emit(children[0], value, depth)
        result, element = self.temp(), self.temp()
        if kind == "projection" and children[1]["type"] == "identity":  # `list[*]`, `list[-200:]`: one pass in C
            self.line(depth, f"{result} = [{element} for {element} in {base} if {element} is not None] "
                             f"if isinstance({base}, list) else None")
            return result
        if kind == "value_projection":
            self.line(depth, f"if isinstance({base}, dict):")
            items = f"list({base}.values())"
        else:
            self.line(depth, f"if isinstance({base}, list):")
            items = base
        self.line(depth + 1, f"{result} = []")
        self.line(depth + 1, f"for {element} in {items}:")
        if kind == "filter_projection":
            condition = self.emit(children[2], element, depth + 2)
            self.line(depth + 2, f"if not {truthy_test(condition)}:")
            self.line(depth + 3, "continue")
        picked = self.emit(children[1], element, depth + 2)
        self.line(depth + 2, f"if {picked} is not None:")
        self.line(depth + 3, f"{result}.append({picked})")
        self.line(depth, "else:")
        self.line(depth + 1, f"{result} = None")
        return result

    def _multi_select(self, kind: str, children: list[dict[str, Any]], value: str, depth: int) -> str:
        result = self.temp()
        self.line(depth, f"if {value} is None:")
        self.line(depth + 1, f"{result} = None")
        self.line(depth, "else:")
        if kind == "multi_select_dict":
            parts = [(child["value"], self.emit(child["children"][0], value, depth + 1)) for child in children]
            self.line(depth + 1, f"{result} = {{{', '.join(f'{key!r}: {part}' for key, part in parts)}}}")
        else:
            parts_ = [self.emit(child, value, depth + 1) for child in children]
            self.line(depth + 1, f"{result} = [{', '.join(parts_)}]")
        return result

    def _flatten(self, base_node: dict[str, Any], value: str, depth: int) -> str:
        base = self.emit(base_node, value, depth)
        result, element = self.temp(), self.temp()
        self.line(depth, f"if isinstance({base}, list):")
        self.line(depth + 1, f"{result} = []")
        self.line(depth + 1, f"for {element} in {base}:")
        self.line(depth + 2, f"if isinstance({element}, list):")
        self.line(depth + 3, f"{result}.extend({element})")
        self.line(depth + 2, "else:")
        self.line(depth + 3, f"{result}.append({element})")
        self.line(depth, "else:")
        self.line(depth + 1, f"{result} = None")
        return result

    def _interpreted(self, node: dict[str, Any], value: str, depth: int) -> str:
        result = self.temp()
        self.line(depth, f"{result} = rt.interpreter.visit({self.constant(node)}, {value})")
        return result
