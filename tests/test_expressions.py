"""The expression compiler agrees with JMESPath's reference interpreter, and the language's own rules hold."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest

from livegate.mapping.expressions import Expression, Runtime
from livegate.mapping.functions import Helpers, SequentialIds

DATA: dict[str, Any] = {
    "event": {"a": {"b": [1, 2, {"c": "x"}], "zero": 0, "t": True, "empty": "", "list": [], "obj": {}},
              "parts": [{"text": "hi"}, {"inlineData": {"data": "AA"}}, {"text": "yo", "thought": True}]},
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
]


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_compiled_matches_the_reference_interpreter(source: str) -> None:
    runtime = Runtime(Helpers(ids=SequentialIds()))
    assert Expression(source)(runtime, DATA) == jmespath.search(source, DATA, jmespath.Options(
        custom_functions=Helpers(ids=SequentialIds())))


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
