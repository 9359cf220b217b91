"""The rule plan: an input's rules with what the session alone decides already decided.

A rule's `when` is a chain of conditions (`a && b && c`). A condition that reads only `session`, `config`
and `tables`, and calls no function that draws an id or reads the clock, has the same value for as long as
the session is the same object, and the translator replaces the session on every change, never mutating
it. Between two changes an audio stream runs the same rules dozens of times a second; the plan decides such
conditions once per session state, drops the rules (and included blocks) they rule out, and leaves each
remaining rule only the conditions its input still decides. The plan is made when an input meets the state a
second time; the first input runs its rules undecided (`Planner.undecided`), as most states around a turn's
edges last one input.

Only leading conditions are decided ahead: `a && b` evaluates `b` only when `a` holds, so deciding a later
condition early could raise an error the rule would not have raised. A rule whose `let`s run before its
`when` is dropped only when those lets are pure too (a `new_id` in one draws an id even when the rule does
not apply). A plan holds while the session is the object it was made for and the config is unchanged; once
a rule changes the session, the rest of the file runs undecided (Translator._run; tests/test_rule_plan.py
runs random sessions both ways and compares every output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from livegate.mapping.expressions import Compiled, Expression, Runtime, compile_node, truthy

# What the session state decides: these scope names, read through functions that give the same result
# for the same arguments.
_DECIDABLE_ROOTS = frozenset({"session", "config", "tables"})
_IMPURE = frozenset({"new_id", "now", "now_ms", "shape"})  # ids, the clock; shapes may draw ids


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One rule left to run, with the conditions its input still decides (empty: it applies)."""

    rule: Any
    origin: int  # its position in the input's rules, where an undecided run goes on from
    rest: tuple[Compiled, ...]


# A plan's steps as one function (translation/rule_code.py's `compiled`): (rules, steps) -> the function
Compile = Callable[[tuple[Any, ...], tuple["Step", ...]], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    rules: tuple[Any, ...]  # the input's rules (RuleIndex.rules_for) the plan was made from
    session: Any  # the session object it holds for
    config_version: int
    steps: tuple[Step, ...]
    run: Any  # the steps as one function (Compile)


class Condition(Expression):
    """A rule's `when`. The translator runs it part by part (`Step.rest`, planned or not), never whole, so
    the idle time makes nothing of it: its parts are made at their first use (about 180 functions over a
    process's first session, 15 ms in all), as they were when only plans ran them; made ahead they would
    cost the idle server about 1 MB, for conditions many of which never run."""

    __slots__ = ()

    def make_idle(self) -> None:
        pass


class Conditions:
    """A `when` split into its `&&` chain, each condition compiled, with whether the session decides it."""

    __slots__ = ("parts",)

    def __init__(self, expression: Expression) -> None:
        self.parts = tuple((compile_node(node), _decidable(node)) for node in _chain(expression.ast))


T = TypeVar("T")


def _once(cache: dict[int, tuple[Expression, T]], expression: Expression, make: Callable[[Expression], T]) -> T:
    """`make(expression)`, made once per expression: mappings are shared and never change, and every plan
    made asks again."""
    known = cache.get(id(expression))
    if known is None or known[0] is not expression:
        known = cache[id(expression)] = (expression, make(expression))
    return known[1]


_conditions: dict[int, tuple[Expression, Conditions]] = {}
_calls: dict[int, tuple[Expression, bool]] = {}


def conditions_of(expression: Expression) -> Conditions:
    """The split of `expression`."""
    return _once(_conditions, expression, Conditions)


def _expression_calls_nothing(expression: Expression) -> bool:
    return _once(_calls, expression, lambda known: _calls_nothing(known.ast))


def _chain(node: dict[str, Any]) -> list[dict[str, Any]]:
    """`a && b && c` (JMESPath nests it to the left) as [a, b, c]."""
    if node["type"] == "and_expression":
        return _chain(node["children"][0]) + _chain(node["children"][1])
    return [node]


def _decidable(node: dict[str, Any]) -> bool:
    """Whether `node`, evaluated against the scope, reads only the decidable roots through pure functions."""
    return _reads(node, at_root=True) and _pure(node)


def _reads(node: dict[str, Any], *, at_root: bool) -> bool:
    kind = node["type"]
    children = [c for c in node.get("children", []) if isinstance(c, dict)]
    if kind == "field":
        return not at_root or node["value"] in _DECIDABLE_ROOTS
    if kind in ("current", "identity"):
        return not at_root  # the whole scope: its event too
    if kind == "expref":
        return all(_reads(child, at_root=False) for child in children)
    if kind in ("subexpression", "index_expression", "projection", "filter_projection", "value_projection",
                "flatten", "pipe"):  # the first child reads the scope, the rest read its result
        return not children or (_reads(children[0], at_root=at_root)
                                and all(_reads(child, at_root=False) for child in children[1:]))
    return all(_reads(child, at_root=at_root) for child in children)


def _pure(node: dict[str, Any]) -> bool:
    if node["type"] == "function_expression" and node["value"] in _IMPURE:
        return False
    return all(_pure(child) for child in node.get("children", []) if isinstance(child, dict))


def _inert_lets(rule: Any) -> bool:
    """Whether skipping the rule's lets is unobservable: expressions calling no function at all (paths,
    comparisons, filters and literals neither raise nor draw ids)."""
    return all(isinstance(build, Expression) and _expression_calls_nothing(build) for _, build in rule.lets)


def _calls_nothing(node: dict[str, Any]) -> bool:
    if node["type"] == "function_expression":
        return False
    return all(_calls_nothing(child) for child in node.get("children", []) if isinstance(child, dict))


class Planner:
    """One translator's plans, one per rule list (the latest session state's), each run by the function
    `compile` makes of its steps."""

    def __init__(self, runtime: Runtime, compile: Compile) -> None:
        self.runtime = runtime
        self.compile = compile
        self._plans: dict[int, Plan] = {}
        self._met: dict[int, tuple[Any, Any, int]] = {}  # per rule list: a state met once, not planned yet
        self._undecided: dict[int, tuple[tuple[Any, ...], tuple[Step, ...]]] = {}

    def plan(self, rules: tuple[Any, ...], scope: dict[str, Any], config_version: int) -> Plan | None:
        """The plan for this session state, or None the first time an input of `rules` meets the state: the
        input then runs every condition. Around a turn's edges most states last one input, and making a plan
        used once costs more than it saves; a state an input meets again (a stream's) gets its plan then."""
        plan = self._plans.get(id(rules))
        session = scope["session"]
        if plan is not None and plan.rules is rules and plan.session is session \
                and plan.config_version == config_version:
            return plan
        met = self._met.get(id(rules))
        if met is not None and met[0] is rules and met[1] is session and met[2] == config_version:
            return self.make(rules, scope, config_version)
        self._met[id(rules)] = (rules, session, config_version)
        return None

    def undecided(self, rules: tuple[Any, ...]) -> tuple[Step, ...]:
        """Every rule of `rules` with all of its `when` left to evaluate, part by part (made once per rule
        list)."""
        known = self._undecided.get(id(rules))
        if known is None or known[0] is not rules:
            known = self._undecided[id(rules)] = (rules, tuple(Step(rule, i, _all_parts(rule))
                                                                for i, rule in enumerate(rules)))
        return known[1]

    def make(self, rules: tuple[Any, ...], scope: dict[str, Any], config_version: int) -> Plan:
        """The plan for the scope's session state, made now."""
        decided = {"session": scope["session"], "config": scope["config"], "tables": scope["tables"]}
        steps = tuple(self._steps(rules, 0, len(rules), decided))
        plan = self._plans[id(rules)] = Plan(rules, scope["session"], config_version, steps,
                                             self.compile(rules, steps))
        return plan

    def _steps(self, rules: tuple[Any, ...], start: int, end: int, scope: dict[str, Any]) -> list[Step]:
        out: list[Step] = []
        index = start
        while index < end:
            rule = rules[index]
            rest = self._decide(rule, scope)
            if rule.skip:  # a guarded include: its block goes, stays, or stays behind its condition
                block_end = index + 1 + rule.skip
                if rest == ():
                    out.extend(self._steps(rules, index + 1, block_end, scope))
                elif rest is not False:
                    inner = self._steps(rules, index + 1, block_end, scope)
                    if inner or not _expression_calls_nothing(rule.when):  # an empty block's guard may still raise
                        out.append(Step(dataclasses.replace(rule, skip=len(inner)), index, rest))
                        out.extend(inner)
                index = block_end
                continue
            if rest is not False:
                out.append(Step(rule, index, rest))
            index += 1
        return out

    def _decide(self, rule: Any, scope: dict[str, Any]) -> tuple[Compiled, ...] | Literal[False]:
        """False: the rule cannot apply in this session state; else `Step.rest`."""
        if rule.when is None:
            return ()
        parts = conditions_of(rule.when).parts
        for position, (condition, decidable) in enumerate(parts):
            if not decidable:
                return _functions(parts[position:])
            try:
                holds = truthy(condition(self.runtime, scope))
            except Exception:  # raised at run time, where the rule reports it as it always has
                return _all_parts(rule)
            if not holds:
                return False if not rule.lets_first or _inert_lets(rule) else _all_parts(rule)
        return ()


def _all_parts(rule: Any) -> tuple[Compiled, ...]:
    """A rule's whole `when` as the chain of its conditions (`a && b` holds when a and then b hold)."""
    return () if rule.when is None else _functions(conditions_of(rule.when).parts)


def _functions(parts: tuple[tuple[Expression, bool], ...]) -> tuple[Compiled, ...]:
    """The parts' generated functions themselves: no wrapper call per frame."""
    return tuple(part.function() for part, _ in parts)


def holds(rest: tuple[Compiled, ...], runtime: Runtime, scope: dict[str, Any]) -> bool:
    """Whether the conditions left to an input hold (in order, stopping at the first that does not)."""
    # a plain loop: all() over a generator costs more
    for condition in rest:  # noqa: SIM110
        if not truthy(condition(runtime, scope)):
            return False
    return True
