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
not apply). A plan holds while the config is unchanged and the session has the same values where its
decisions read it: a decided condition that reads the session through plain paths (`session.item.kind`,
`session.items[0].id` reads `session.items`) is decided by the values at those paths, so a plan records them
(`Plan.reads`) and serves every later session state with the same values there, in this turn or the next.
The audio append's plan reads three keys and outlives every change a turn's edge makes; the audio delta's
two plans (before and after the watchdog judged the answer's loudness) are made in the first turn and
reused in every turn after. A condition reading the session otherwise (whole, or through a projection of it) ties
its plan to the one session object. Once a rule changes the session, the rest of the file runs undecided
(Translator._run; tests/test_rule_plan.py runs random sessions both ways and compares every output).
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
_PLANS_PER_LIST = 8  # plans a translator keeps per rule list (an audio delta's stream has two states a turn)
_SCALARS = (str, int, float, bool)

Read = tuple[tuple[str, ...], bool]  # a session path, and whether only its truth is read (`session.response && ...`)
# What was read at each path: (path, the value there or its truth, whether it is the truth)
ReadValues = tuple[tuple[tuple[str, ...], Any, bool], ...]


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
    session: Any  # the session object it was made for
    config_version: int
    steps: tuple[Step, ...]
    run: Any  # the steps as one function (Compile)
    reads: ReadValues | None  # what its decisions read (None: the session whole, it holds for that one)

    def holds_for(self, session: Any) -> bool:
        """Whether the session has the values this plan's decisions read (it then decides them the same)."""
        return session is self.session if self.reads is None else reads_same(session, self.reads)


class Condition(Expression):
    """A rule's `when`. The translator runs it part by part (`Step.rest`, planned or not), never whole, so
    the idle time makes nothing of it: its parts are made at their first use (about 180 functions over a
    process's first session, 15 ms in all), as they were when only plans ran them; made ahead they would
    cost the idle server about 1 MB, for conditions many of which never run."""

    __slots__ = ()

    def make_idle(self) -> None:
        pass


class Conditions:
    """A `when` split into its `&&` chain, each condition compiled, with whether the session decides it, and
    the session paths each reads (None: it reads the session otherwise)."""

    __slots__ = ("_nodes", "_reads", "parts")

    def __init__(self, expression: Expression) -> None:
        self._nodes = _chain(expression.ast)
        self.parts = tuple((compile_node(node), _decidable(node)) for node in self._nodes)
        self._reads: tuple[tuple[Read, ...] | None, ...] | None = None

    @property
    def reads(self) -> tuple[tuple[Read, ...] | None, ...]:
        """Per condition, what it reads of the session (made when a plan first needs it: loading the mappings
        builds every `when`'s conditions, for the index and lint)."""
        if self._reads is None:
            self._reads = tuple(_reads_of(node) for node in self._nodes)
        return self._reads


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
    return _scope_reads(node, True, []) and _pure(node)


def _reads_of(condition: dict[str, Any]) -> tuple[Read, ...] | None:
    """What a condition reads of the session: a condition that is a path alone (or its negation) reads only
    the truth of the value there (an answer's response is open, whichever it is)."""
    alone = condition["children"][0] if condition["type"] == "not_expression" else condition
    paths = session_reads(alone)
    if paths is not None and len(paths) == 1 and alone["type"] == "subexpression" and all(
            child["type"] == "field" for child in alone["children"]):
        return ((paths[0], True),)
    return None if paths is None else tuple((path, False) for path in paths)


def session_reads(node: dict[str, Any]) -> tuple[tuple[str, ...], ...] | None:
    """The plain paths below `session` that an expression reads from its scope (`session.item.kind` reads
    ("item", "kind"); `session.items[0].id` reads ("items",), where the path stops being plain): the values
    there decide what it reads of the session. None when it reads the session whole or through anything but
    a path from it."""
    found: list[tuple[str, ...]] = []
    _scope_reads(node, True, found)
    return None if () in found else tuple(dict.fromkeys(found))


def _scope_reads(node: dict[str, Any], at_root: bool, found: list[tuple[str, ...]]) -> bool:
    """Whether `node` reads only the decidable roots of the scope; adds to `found` the plain session paths it
    reads (`()`: the session whole, or the scope itself)."""
    kind = node["type"]
    children = [c for c in node.get("children", []) if isinstance(c, dict)]
    if at_root and kind == "field":
        if node["value"] == "session":
            found.append(())  # a bare `session` reads it whole
        return node["value"] in _DECIDABLE_ROOTS
    if at_root and kind == "subexpression" and children[0]["type"] == "field" and children[0]["value"] == "session":
        path: list[str] = []
        for child in children[1:]:  # `session.a.b`, `session.a.b[0]`: the plain path's end decides the rest
            if child["type"] == "field":
                path.append(child["value"])
                continue
            if child["type"] == "index_expression" and child["children"][0]["type"] == "field":
                path.append(child["children"][0]["value"])
            break
        found.append(tuple(path))
        return True  # every later step reads the value before it, not the scope
    if kind in ("current", "identity"):
        if at_root:
            found.append(())
        return not at_root  # the whole scope: its event too
    if kind == "expref":
        return all(_scope_reads(child, False, found) for child in children)
    if kind in ("subexpression", "index_expression", "projection", "filter_projection", "value_projection",
                "flatten", "pipe"):  # the first child reads the scope, the rest read its result
        return not children or (_scope_reads(children[0], at_root, found)
                                and all(_scope_reads(child, False, found) for child in children[1:]))
    return all(_scope_reads(child, at_root, found) for child in children)


def read_values(session: Any, reads: tuple[Read, ...]) -> ReadValues:
    """What `reads` find in `session` (the value, or its truth): a later state holding the same is read the
    same."""
    return tuple((path, truthy(at(session, path)) if by_truth else at(session, path), by_truth)
                 for path, by_truth in reads)


def reads_same(session: Any, values: ReadValues) -> bool:
    """Whether `session` holds `values` where they were read: the same object (the session is never mutated,
    only replaced), an equal string, number or boolean, or for a truth, the same truth."""
    for path, value, by_truth in values:
        found = at(session, path)
        if by_truth:
            if truthy(found) is not value:
                return False
        elif found is not value and not (type(found) is type(value) and isinstance(value, _SCALARS)
                                         and found == value):
            return False
    return True


def at(session: Any, path: tuple[str, ...]) -> Any:
    """The value at `path`, as JMESPath reads it: null where a key is missing or a step is not an object."""
    value = session
    for key in path:
        if type(value) is not dict:
            return None
        value = value.get(key)
    return value


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
        self._plans: dict[int, list[Plan]] = {}  # per rule list, the latest used first
        self._current: dict[int, tuple[Any, Plan]] = {}  # per rule list: the latest state, and the plan it took
        self._met: dict[int, tuple[Any, Any, int]] = {}  # per rule list: a state met once, not planned yet
        self._undecided: dict[int, tuple[tuple[Any, ...], tuple[Step, ...]]] = {}

    def plan(self, rules: tuple[Any, ...], scope: dict[str, Any], config_version: int) -> Plan | None:
        """The plan for this session state: one made before whose reads the state matches, or one made now
        when an input of `rules` meets the state a second time; None the first time (the input then runs every
        condition). Around a turn's edges most states last one input, and making a plan used once costs more
        than it saves."""
        session = scope["session"]
        current = self._current.get(id(rules))
        if current is not None and current[0] is session and current[1].rules is rules \
                and current[1].config_version == config_version:
            return current[1]
        plans = self._plans.get(id(rules))
        if plans:
            for position, plan in enumerate(plans):
                if plan.rules is rules and plan.config_version == config_version and plan.holds_for(session):
                    if position:
                        plans.insert(0, plans.pop(position))
                    self._current[id(rules)] = (session, plan)
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
        session = scope["session"]
        decided = {"session": session, "config": scope["config"], "tables": scope["tables"]}
        paths: list[Read | None] = []  # what the decisions read of the session (None: all of it)
        steps = tuple(self._steps(rules, 0, len(rules), decided, paths))
        known = tuple(read for read in dict.fromkeys(paths) if read is not None)
        reads = None if None in paths else read_values(session, known)
        plan = Plan(rules, session, config_version, steps, self.compile(rules, steps), reads)
        plans = self._plans.get(id(rules))
        if not plans or plans[0].rules is not rules:
            plans = self._plans[id(rules)] = []
        plans.insert(0, plan)
        del plans[_PLANS_PER_LIST:]
        self._current[id(rules)] = (session, plan)
        return plan

    def _steps(self, rules: tuple[Any, ...], start: int, end: int, scope: dict[str, Any],
               paths: list[Read | None]) -> list[Step]:
        out: list[Step] = []
        index = start
        while index < end:
            rule = rules[index]
            rest = self._decide(rule, scope, paths)
            if rule.skip:  # a guarded include: its block goes, stays, or stays behind its condition
                block_end = index + 1 + rule.skip
                if rest == ():
                    out.extend(self._steps(rules, index + 1, block_end, scope, paths))
                elif rest is not False:
                    inner = self._steps(rules, index + 1, block_end, scope, paths)
                    if inner or not _expression_calls_nothing(rule.when):  # an empty block's guard may still raise
                        out.append(Step(dataclasses.replace(rule, skip=len(inner)), index, rest))
                        out.extend(inner)
                index = block_end
                continue
            if rest is not False:
                out.append(Step(rule, index, rest))
            index += 1
        return out

    def _decide(self, rule: Any, scope: dict[str, Any], paths: list[Read | None]
                ) -> tuple[Compiled, ...] | Literal[False]:
        """False: the rule cannot apply in this session state; else `Step.rest`. Adds to `paths` what each
        condition decided reads of the session (None: one reads it whole)."""
        if rule.when is None:
            return ()
        conditions = conditions_of(rule.when)
        parts = conditions.parts
        for position, (condition, decidable) in enumerate(parts):
            if not decidable:
                return _functions(parts[position:])
            reads = conditions.reads[position]
            paths.extend((None,) if reads is None else reads)
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
