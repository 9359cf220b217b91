"""A rule plan as one generated Python function: the translator's rule loop, unrolled for a stream.

A rule file runs top to bottom (translation/translator.py says how a rule applies). Interpreted, each rule of
an audio frame cost a loop turn, a condition call, a fire, an apply and a dispatch per emit, all reading the
rule's fields again: a chunk's round trip spent more on that than on its rules' own expressions. A plan
(mapping/plan.py) is made for a session state an input meets again, a stream's; its steps become the body of
one function, each rule's fields read once, when it is made:

    r = R2                                    # the rule being applied, for an error report
    if <each condition left, as JMESPath truthiness>:
        scope['x'] = B3._fn(rt, scope)        # let
        v = B4._fn(rt, scope)                 # set
        tr.session = assign(tr.session, K5, None if v is EXPLICIT_NULL else v)
        scope['session'] = tr.session
        m = B6._fn(rt, scope)                 # emit to upstream
        if m is not None:
            out.upstream.append(m)
        if tr.session is not planned:         # the plan's decisions are stale: the rest is interpreted
            return 3
    else:
        scope.pop('x', None)

The interpreter (`Translator._interpret`) applies a rule whose condition held through the same code, made per
rule (`applier`): its lets, transforms, sets and emits, once or per `for_each` element.

`run(tr, scope, out, event_id, planned)` returns 0, or the position in the input's rules from which the
rest runs interpreted, every condition evaluated (`Translator._interpret`, which also runs an input whose state
has no plan: the states around a turn's edges mostly last one input, and code made for one run would cost
more than it saves). A rule that raises a JMESPath, type, value or key error ends the input, reported by
`tr._rule_failed` (a mapping bug must not take the session down). Functions are made once per shape (the
input's rules, each step's position, block and conditions, a few tenths of a millisecond each) and shared by
every session: a plan made again for the next turn's state reuses its function. tests/test_rule_plan.py runs
random sessions with plans and interpreted and compares every output.

`tr` is the Translator: the function reads `runtime`, `session`, `wire` and `_to_client`, and calls
`_wire_text`, `_send_client`, `_transform`, `_emit_command` and `_rule_failed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jmespath.exceptions import JMESPathError

from livegate.mapping.codegen import closure, truthy_test
from livegate.mapping.expressions import EXPLICIT_NULL, SIZED, Generated

# (translator, scope, output, the client's event_id, the session the plan holds for) -> 0 or where the rest
# runs interpreted
Run = Callable[[Any, dict[str, Any], Any, "str | None", Any], int]
Apply = Callable[[Any, dict[str, Any], Any], None]  # (translator, scope, output): a rule whose condition held


class PhantomObject(ValueError):
    """A `set` of a field inside an object that does not exist (it would create a phantom one)."""


def assign(root: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `root` with `value` at `keys` (null removes the key); containers along the path are copied.

    Setting a field of a missing object is an error, not a new object: `set: session.item.status`
    while no item is open would otherwise invent an item with nothing but a status.
    """
    head, rest = keys[0], keys[1:]
    if value is None and head not in root:
        return root  # removing what is not there changes nothing: no copy (a rule may clear a key per frame)
    if rest:
        inner = root.get(head)
        if not isinstance(inner, dict):
            if value is None:  # removing a field of nothing changes nothing
                return root
            found = "missing" if inner is None else "not an object"
            raise PhantomObject(f"cannot set {'.'.join(keys)}: {head} is {found}")
        changed = assign(inner, rest, value)
        if changed is inner:
            return root  # (before any copy: a rule that clears a nested key per frame copies nothing)
        new = dict(root)
        new[head] = changed
        return new
    if value is not None and root.get(head) is value:
        return root  # the same object already: nothing changes, and the session (and its rule plan) stays
    new = dict(root)
    if value is None:
        new.pop(head, None)
    else:
        new[head] = value
    return new


# What a rule's failure is (PhantomObject is a ValueError); anything else is a bug of livegate's own.
RULE_ERRORS = (JMESPathError, TypeError, ValueError, KeyError)
_GLOBALS: dict[str, Any] = {"SIZED": SIZED, "EXPLICIT_NULL": EXPLICIT_NULL, "RULE_ERRORS": RULE_ERRORS,
                            "assign": assign}
_MADE: dict[tuple[Any, ...], tuple[Any, Run]] = {}  # by shape; (what the shape's ids name, the function)
_APPLIERS: dict[int, tuple[Any, Apply]] = {}  # by rule; (the rule, its function)
_MAX_MADE = 4096  # functions of each kind a process keeps (a few hundred in practice; tests load mappings often)


def compiled(rules: tuple[Any, ...], steps: tuple[Any, ...]) -> Run:
    """The function running a plan's `steps` (mapping/plan.py's Step: a rule of `rules`, its position, the
    conditions left to it) for one input."""
    key = (id(rules), tuple((s.origin, s.rule.skip, tuple(map(id, s.rest))) for s in steps))
    known = _MADE.get(key)
    if known is not None and known[0][0] is rules:
        return known[1]
    if len(_MADE) >= _MAX_MADE:
        _MADE.clear()
    function = _Writer(rules).function(steps)
    _MADE[key] = ((rules, steps), function)  # the objects behind the key's ids stay alive with it
    return function


def applier(rule: Any) -> Apply:
    """The function applying `rule` once its condition held (the interpreter's fire: once, or per `for_each`
    element), made at the rule's first use and shared by every session."""
    known = _APPLIERS.get(id(rule))
    if known is not None and known[0] is rule:
        return known[1]
    if len(_APPLIERS) >= _MAX_MADE:
        _APPLIERS.clear()
    writer = _Writer((rule,))
    writer._fire(rule, 1)
    function: Apply = writer.make("apply", "tr, scope, out", rule.where,
                                  "        rt = tr.runtime\n" + ("\n".join(writer.lines) or "        pass") + "\n")
    _APPLIERS[id(rule)] = (rule, function)
    return function


class _Writer:
    def __init__(self, rules: tuple[Any, ...]) -> None:
        self.rules = rules
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}

    def function(self, steps: tuple[Any, ...]) -> Run:
        self._steps(steps, 2)
        body = "\n".join(self.lines) or "            pass"
        run: Run = self.make("run", "tr, scope, out, event_id, planned",
                             self.rules[0].where if self.rules else "nothing",
                             "        rt = tr.runtime\n"
                             "        r = None\n"
                             "        try:\n"
                             f"{body}\n"
                             "        except RULE_ERRORS as exc:\n"
                             "            tr._rule_failed(r, exc, out, event_id)\n"
                             "        return 0\n")
        return run

    def make(self, name: str, parameters: str, where: str, body: str) -> Any:
        """`def name(parameters)` with `body` (indented for it), closing over the constants, compiled."""
        return closure(f"def {name}({parameters}):\n{body}", name, self.constants, _GLOBALS, f"<rules of {where}>")

    # -- the lines ---------------------------------------------------------------------------------

    def _line(self, depth: int, text: str) -> None:
        self.lines.append("    " * (depth + 1) + text)

    def _name(self, value: Any) -> str:
        name = f"k{len(self.constants)}"
        self.constants[name] = value
        return name

    def _call(self, build: Any) -> str:
        """How the code calls a compiled expression or template (its function, made at first use, without
        the wrapper's frame) or a constant's function."""
        name = self._name(build)
        return f"{name}._fn(rt, scope)" if isinstance(build, Generated) else f"{name}(rt, scope)"

    def _holds(self, conditions: tuple[Any, ...]) -> str:
        """Each condition, in order, as JMESPath truthiness (false, null, '', [] and {} are false)."""
        return " and ".join(truthy_test("c", self._call(condition)) for condition in conditions)

    def _steps(self, steps: tuple[Any, ...], depth: int) -> None:
        index = 0
        while index < len(steps):
            step = steps[index]
            if step.rule.skip:  # a guarded include: its block is the steps that follow it
                block = steps[index + 1: index + 1 + step.rule.skip]
                self._guard(step, block, depth)
                index += 1 + step.rule.skip
            else:
                self._rule(step, depth)
                index += 1

    def _guard(self, step: Any, block: tuple[Any, ...], depth: int) -> None:
        rule = self.rules[step.origin]
        self._line(depth, f"r = {self._name(rule)}")
        if rule.lets_first:
            self._lets(rule, depth)
        self._line(depth, f"enter = {self._holds(step.rest) if step.rest else 'True'}")
        if rule.local_names:
            self._line(depth, "if not enter:")
            self._pop(rule.local_names, depth + 1)
        self._line(depth, "if enter:")
        if block:
            self._steps(block, depth + 1)
        else:
            self._line(depth + 1, "pass")

    def _rule(self, step: Any, depth: int) -> None:
        rule = self.rules[step.origin]
        self._line(depth, f"r = {self._name(rule)}")
        if rule.lets_first:
            self._lets(rule, depth)
        body = depth
        if step.rest:
            self._line(depth, f"if {self._holds(step.rest)}:")
            body = depth + 1
        empty = len(self.lines)
        self._fire(rule, body)
        if rule.stop:
            self._line(body, "return 0")
        elif rule.sets or rule.transforms:  # only these change the session
            self._line(body, "if tr.session is not planned:")
            self._line(body + 1, f"return {step.origin + 1}")
        if len(self.lines) == empty:  # a rule that does nothing (its lets only)
            self._line(body, "pass")
        if step.rest and rule.local_names:
            self._line(depth, "else:")
            self._pop(rule.local_names, depth + 1)

    def _fire(self, rule: Any, depth: int) -> None:
        """The rule applied once, or once per `for_each` element bound to its `as` name."""
        if rule.for_each is None:
            self._apply(rule, depth)
        else:
            self._line(depth, f"elements = {self._call(rule.for_each)}")
            self._line(depth, "if isinstance(elements, list):")
            self._line(depth + 1, "for element in elements:")
            self._line(depth + 2, f"scope[{rule.as_!r}] = element")
            self._apply(rule, depth + 2)
            self._line(depth, f"scope.pop({rule.as_!r}, None)")
        self._pop(rule.local_names, depth)  # `let` and `transform` names belong to their rule alone

    def _lets(self, rule: Any, depth: int) -> None:
        for name, build in rule.lets:
            self._line(depth, f"scope[{name!r}] = {self._call(build)}")

    def _apply(self, rule: Any, depth: int) -> None:
        if not rule.lets_first:
            self._lets(rule, depth)
        for step in rule.transforms:  # its state lives in a declared session key, like any other state
            self._line(depth, f"tr._transform({self._name(step)}, scope)")
        for keys, build in rule.sets:
            self._line(depth, f"v = {self._call(build)}")
            self._line(depth, f"tr.session = assign(tr.session, {self._name(keys)}, "
                              "None if v is EXPLICIT_NULL else v)")
            self._line(depth, "scope['session'] = tr.session")
        for emit in rule.emits:
            self._emit(emit, depth)

    def _emit(self, emit: Any, depth: int) -> None:
        if emit.when is not None:
            self._line(depth, f"if {self._holds((emit.when,))}:")
            depth += 1
        send = depth
        if emit.wire is not None:  # JSON text from its template, when the session may have it (wire mode)
            wire = self._name(emit.wire)
            self._line(depth, f"text = tr._wire_text({wire}, scope) if tr.wire and {wire}.type not in "
                              "tr._to_client else None")
            self._line(depth, "if text is not None:")
            self._line(depth + 1, "out.client.append(text)")
            self._line(depth, "else:")
            send = depth + 1
        self._line(send, f"m = {self._call(emit.message)}")
        self._line(send, "if m is not None:")
        if emit.to == "client":
            self._line(send + 1, "tr._send_client(out, m)")
        elif emit.to == "upstream":
            self._line(send + 1, "out.upstream.append(m)")
        else:
            self._line(send + 1, f"tr._emit_command({emit.to!r}, m, out)")

    def _pop(self, names: tuple[str, ...], depth: int) -> None:
        for name in names:
            self._line(depth, f"scope.pop({name!r}, None)")
