"""A rule plan as generated code (translation/rule_code.py), on rules made here: what a rule file does with each
rule (tests/test_rule_plan.py compares the real mappings' plans with the interpreter on random sessions)."""

from __future__ import annotations

from typing import Any

from livegate.mapping import load_mappings
from livegate.mapping.expressions import Expression
from livegate.mapping.loader import Emit, Rule
from livegate.mapping.plan import Step
from livegate.translation.rule_code import compiled
from livegate.translation.translator import Output, Translator

MAPPINGS = load_mappings()


def _rule(name: str, when: str | None = None, *, say: str | None = None, **fields: Any) -> Rule:
    """A rule whose emit (when `say` is given) sends the client an event of type `say`."""
    emits = (Emit("client", None, Expression(f"{{type: '{say}'}}")),) if say else ()
    return Rule(name, f"test:{name}", when=Expression(when) if when else None, emits=emits, **fields)


def _run(rules: tuple[Rule, ...], event: dict[str, Any], *,
         session: dict[str, Any] | None = None) -> tuple[Translator, Output, dict[str, Any], int]:
    """The rules as a plan's steps, each with its whole `when` left, run for `event` in `session`."""
    translator = Translator(MAPPINGS, deterministic=True)
    translator.session = session if session is not None else {}
    steps = tuple(Step(rule, i, (rule.when,) if rule.when else ()) for i, rule in enumerate(rules))
    scope = {"event": event, "session": translator.session, "config": translator.config, "tables": {}}
    out = Output()
    resume = compiled(rules, steps)(translator, scope, out, "evt_1", translator.session)
    return translator, out, scope, resume


def _types(out: Output) -> list[str]:
    return [message["type"] for message in out.client]


def test_rules_run_in_order_each_when_its_condition_holds_and_stop_ends_the_file() -> None:
    rules = (_rule("a", "event.a", say="a"), _rule("b", "event.b", say="b"), _rule("c", say="c", stop=True),
             _rule("d", say="d"))
    assert _types(_run(rules, {"a": 1, "b": 0})[1]) == ["a", "b", "c"]  # 0 is true in JMESPath
    assert _types(_run(rules, {"a": [], "b": ""})[1]) == ["c"]  # empty lists and strings are false


def test_a_failing_rule_ends_the_input_with_an_error_naming_it_and_echoing_the_event_id() -> None:
    rules = (_rule("first", say="first"), _rule("broken", lets=(("n", Expression("length(event.n)")),), say="x"),
             _rule("after", say="after"))
    out = _run(rules, {"n": 5})[1]
    assert _types(out) == ["first", "error"]
    error = out.client[1]["error"]
    assert "'broken'" in error["message"] and error["code"] == "translation_error" and error["event_id"] == "evt_1"


def test_for_each_binds_each_element_and_lets_belong_to_their_rule() -> None:
    rules = (Rule("each", "test:each", for_each=Expression("event.parts"), as_="part",
                  lets=(("doubled", Expression("[part, part]")),), local_names=("doubled",),
                  emits=(Emit("client", None, Expression("{type: 'p', value: doubled}")),)),)
    _, out, scope, _ = _run(rules, {"parts": ["x", "y"]})
    assert [message["value"] for message in out.client] == [["x", "x"], ["y", "y"]]
    assert "part" not in scope and "doubled" not in scope
    assert _run(rules, {"parts": "not a list"})[1].client == []


def test_a_set_replaces_the_session_and_a_plan_it_makes_stale_hands_over_at_the_next_rule() -> None:
    rules = (Rule("mark", "test:mark", sets=((("x",), Expression("event.x")),)), _rule("next", say="n"))
    translator, out, _, resume = _run(rules, {"x": 1}, session={"x": 0})
    assert translator.session == {"x": 1} and resume == 1 and out.client == []  # the rest runs interpreted
    translator, out, _, resume = _run(rules, {"x": None}, session={})
    assert resume == 0 and _types(out) == ["n"], "removing what is not there leaves the session as it was"


def test_a_guarded_include_runs_its_block_only_when_its_condition_holds() -> None:
    rules = (_rule("guard", "event.go", skip=2), _rule("inside 1", say="i1"), _rule("inside 2", say="i2"),
             _rule("after", say="after"))
    assert _types(_run(rules, {"go": False})[1]) == ["after"]
    assert _types(_run(rules, {"go": True})[1]) == ["i1", "i2", "after"]
