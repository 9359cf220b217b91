"""The expression compiler agrees with JMESPath's reference interpreter, and the language's own rules hold."""

from __future__ import annotations

import sys
import threading
from typing import Any

import jmespath
import pytest

from livegate.mapping import load_mappings
from livegate.mapping.expressions import Expression, Runtime, compile_template, make_unmade
from livegate.mapping.functions import Helpers, SequentialIds
from livegate.mapping.yamlpos import Located

DATA: dict[str, Any] = {
    "event": {"a": {"b": [1, 2, {"c": "x"}], "zero": 0, "t": True, "empty": "", "list": [], "obj": {}},
              "parts": [{"text": "hi"}, {"inlineData": {"data": "AA"}}, {"text": "yo", "thought": True}],
              "nums": [3, 1, 4, 1.5, 2], "nested": [[1, 2], [3, [4]], 5, {"x": 1}, [{"x": 2}]]},
    "session": {"n": 1, "flag": False, "name": "s"},
}

EXPRESSIONS = [
    "event.a.b[0]", "event.a.b[-1].c", "event.a.b[9]", "event.missing.deep", "event.a.zero", "event.a.zero == `0`",
    "event.a.t == `1`", "event.a.zero == `false`", "session.n != `1`", "event.a.empty || 'fallback'",
    "event.a.list && 'yes'", "event.a.zero && 'zero is true'", "!(event.a.obj)", "!(event.a.zero)", "!(session.flag)",
    "{x: session.n, y: event.a.b[2].c}", "[session.name, `null`, 'lit']", "event.parts[?text && !thought].text",
    "event.parts[*].inlineData.data", "length(event.a.b)", "join('-', [session.name, 'z'])",
    "event.a.b | [0]", "merge(session, {n: `2`})", "keys(event.a.obj)", "sum([`1`, session.n])",
    "sort_by(event.parts, &to_string(text))[0].text", "to_string(event.a.b[2])", "`[1, 2]`", "@.session.n",
    # projections, filters, flatten, slices
    "event.parts[*]", "event.parts[*].text", "event.parts[*].inlineData.data", "event.a.b[*].c", "event.a.zero[*]",
    "event.parts[?inlineData]", "event.parts[?inlineData].inlineData.data", "event.parts[?!thought].text",
    "event.parts[?text == 'hi']", "event.parts[?text != 'hi'].text", "event.nums[?@ > `2`]", "event.nums[?@ <= `2`]",
    "event.a.obj[?x]", "event.parts[?(text && !thought) || inlineData]", "event.a[?b]", "event.missing[?x]",
    "event.a.*", "event.a.*.c", "event.parts[0].*", "event.nums.*", "session.*", "*.n", "*.a.zero",
    "event.nested[]", "event.nested[][]", "event.nested[].x", "event.parts[]", "event.a.b[]", "event.a.obj[]",
    "event.nested[*][0]", "event.nested[][?@ > `1`]", "event.nums[1:3]", "event.nums[::-1]", "event.nums[-2:]",
    "event.nums[:2].to_string(@)", "event.a.t[0:1]", "event.parts[0:2].text", "event.parts[::2][*].text",
    # ordering comparisons: numbers and strings compare, anything else is null
    "session.n < `2`", "session.n >= `1`", "session.n > `1.5`", "session.name > 'a'", "session.name <= 'r'",
    "event.a.t < `2`", "session.flag > `0`", "event.a.obj < `1`", "event.a.list >= event.a.list", "`null` < `1`",
    # functions, bound directly: results and the same checks as JMESPath's dispatch
    "length(event.parts)", "length(session.name)", "length(event.a.obj)", "starts_with(session.name, 's')",
    "contains(event.a.b, `1`)", "contains(session.name, 'x')", "not_null(event.missing, session.n)",
    "type(event.a.t)", "to_number('12')", "to_array(session.n)", "values(session)", "max(event.nums)",
    "join(',', event.parts[*].text)", "abs(`-3`)", "floor(`2.5`)", "avg(event.nums)", "reverse(event.nums)",
    "merge(session, event.a.obj)", "get(session, 'name', 'dflt')", "get(session, 'nope', 'dflt')",
    "field(session, 'name')", "if(session.flag, 'a', 'b')", "is_base64('QUJD')", "is_base64('QUJ')",
    "b64_standard('ab-_')", "to_json(event.a.b)", "parse_json_or_string('[1]')", "with_key(session, 'k', `1`)",
    "append(event.nums, `9`)", "add(session.n, `2`)", "duration_ms('1.5s')", "deep_merge(session, {n: `3`})",
    "event.parts[?contains(keys(@), 'text')].text", "map(&text, event.parts)", "max_by(event.parts, &length(keys(@)))",
]

# Calls JMESPath refuses: the compiled path must raise the same error.
FAILING = [
    "length(session.n)", "length(`1`, `2`)", "starts_with(session.n, 's')", "is_base64(session.n)",
    "join(',', event.nums)", "get(event.nums, 'a', `1`)", "add(session.name, `1`)", "unknown_fn(`1`)",
    "b64_standard(`null`)", "abs(session.name)", "not_null()", "session.name < `1`", "sum(event.parts)",
    "is_base64(event.a.t)", "if(`1`, `2`)", "to_json()",
]


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except jmespath.exceptions.JMESPathError as exc:
        return "error", type(exc).__name__
    except TypeError:
        return "error", "TypeError"


@pytest.mark.parametrize("source", EXPRESSIONS + FAILING)
def test_compiled_matches_the_reference_interpreter(source: str) -> None:
    runtime = Runtime(Helpers(ids=SequentialIds()))
    compiled = _outcome(lambda: Expression(source)(runtime, DATA))
    reference = _outcome(lambda: jmespath.search(source, DATA, jmespath.Options(
        custom_functions=Helpers(ids=SequentialIds()))))
    assert compiled == reference
    if source in FAILING:
        assert compiled[0] == "error"


def test_compiled_expressions_fall_back_only_for_expression_arguments() -> None:
    """The interpreter is reached only by calls with `&expression` arguments."""

    class Counting:
        visits = 0

        def visit(self, node: Any, value: Any) -> Any:
            Counting.visits += 1
            return jmespath.visitor.TreeInterpreter().visit(node, value)

    runtime = Runtime(Helpers(ids=SequentialIds()))
    runtime.interpreter = Counting()  # type: ignore[assignment]
    for source in EXPRESSIONS:
        if "&" not in source:
            Expression(source)(runtime, DATA)
    assert Counting.visits == 0


@pytest.mark.parametrize(("source", "expected"), [
    ("!session.missing", True),  # JMESPath alone reads this as (!session).missing, i.e. null
    ("!session.name", False),
    ("!event.a.b[0]", False),
    ("!event.a.zero", False),  # 0 is true in JMESPath
    ("!event.a.obj", True),
    ("!session.flag && session.name", "s"),
])
def test_negation_applies_to_the_whole_path(source: str, expected: Any) -> None:
    assert Expression(source)(Runtime(Helpers()), DATA) == expected


def test_literal_containers_are_never_shared() -> None:
    expression, runtime = Expression("`[]`"), Runtime(Helpers())
    first = expression(runtime, DATA)
    first.append(1)
    assert expression(runtime, DATA) == []


def _template(yaml_text: str) -> Any:
    doc = Located("template.yaml", yaml_text)
    return compile_template(doc, ("t",), doc.data["t"])


def test_a_template_leaves_out_null_fields_keeps_explicit_nulls_and_honours_when() -> None:
    """A template is one generated function; what it builds is what a maintainer reading the YAML expects."""
    build = _template(
        "t:\n"
        "  type: fixed\n"
        "  name: =session.name\n"
        "  gone: =session.missing\n"
        "  kept_null: =field(session, 'nothing')\n"
        "  nested: {$when: =session.flag, x: 1}\n"
        "  inner: {$when: =session.n, n: =session.n, tags: [a, =session.name, =session.missing]}\n"
        "  constant: {deep: [1, 2]}\n")
    data = {"session": {"n": 1, "flag": False, "name": "s", "nothing": None}}
    first = build(Runtime(Helpers()), data)
    assert first == {"type": "fixed", "name": "s", "kept_null": None,
                     "inner": {"n": 1, "tags": ["a", "s"]}, "constant": {"deep": [1, 2]}}
    assert list(first) == ["type", "name", "kept_null", "inner", "constant"]  # the order written
    first["constant"]["deep"].append(3)
    assert build(Runtime(Helpers()), data)["constant"] == {"deep": [1, 2]}  # constants are never shared


def test_every_shipped_expression_and_template_is_made_into_python() -> None:
    """What the server makes in its idle time after start: every expression and template of the shipped
    mappings generates (a generator bug would otherwise surface only in the session that first meets it)."""
    mappings = load_mappings()  # held: the unmade are weakly referenced
    assert make_unmade(10) > 1000  # loading made nothing
    assert make_unmade(10**6) == 0
    assert mappings.rule_files


def test_functions_compiled_on_several_threads_at_once_each_get_their_own() -> None:
    # A server's idle-time generation and a translator on another thread (the tests run both) compile at once
    # into the shared globals: each must get the function it compiled, never fail on the other's.
    from livegate.mapping.codegen import _GLOBALS, closure

    made: list[tuple[int, int]] = []
    failed: list[Exception] = []

    def compile_many(tag: int) -> None:
        for _ in range(1500):
            try:
                function = closure(f"def f{tag}(rt, value):\n    return K", f"f{tag}", {"K": tag}, _GLOBALS, "<test>")
                made.append((tag, function(None, None)))
            except Exception as exc:  # what the test looks for
                failed.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=compile_many, args=(tag,)) for tag in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failed
    assert len(made) == 6000 and all(tag == result for tag, result in made)
