"""The declared session state (mappings/state.yaml): its keys, what they hold, who may write them, and
the lifecycle.

The loader checks every expression's `session.<key>...` reads and every rule's `set` against the
declaration, down to nested fields (mapping/fields.py). `StateSpec.check_types` serves the test suite, which
checks the state after every input (types and declared fields); `StateSpec.lifecycle_state` and `allows`
serve the translator, which checks at run time that each change of lifecycle state is a listed transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from livegate.mapping.expressions import Expression, Runtime, Scope, truthy
from livegate.mapping.fields import ELEMENT, FieldSpec, Step, did_you_mean, session_paths, walk


@dataclass(frozen=True)
class KeySpec(FieldSpec):
    name: str = ""
    writers: frozenset[str] = frozenset()


@dataclass
class StateSpec:
    keys: dict[str, KeySpec] = field(default_factory=dict)
    states: tuple[tuple[str, Expression], ...] = ()
    transitions: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)  # (from, input) -> to

    def check_types(self, session: dict[str, Any]) -> list[str]:
        """Problems with `session` against the declaration: undeclared keys or fields, values of the wrong type."""
        problems = []
        for key, value in session.items():
            spec = self.keys.get(key)
            if spec is None:
                problems.append(f"session.{key} is not declared in mappings/state.yaml")
            else:
                problems += spec.problems(value, f"session.{key}")
        return problems

    @cached_property
    def lifecycle_keys(self) -> frozenset[str]:
        """The session keys the lifecycle states are made of (a state can only change when one of them does)."""
        return frozenset().union(*(session_keys(condition.ast) for _, condition in self.states))

    def undeclared(self, steps: tuple[Step, ...]) -> tuple[int, str] | None:
        """(index of the offending step, what is wrong) for `session.<steps>`, or None when it is declared.

        Step 0 is the key: "is not declared in mappings/state.yaml" comes back for an unknown one."""
        spec = self.keys.get(steps[0])
        if spec is None:
            return 0, f"is not declared in mappings/state.yaml{did_you_mean(steps[0], self.keys)}"
        problem = walk(spec, steps[1:])
        return None if problem is None else (problem[0] + 1, problem[1])

    def misuse(self, steps: tuple[Step, ...], verb: str) -> tuple[int, str] | None:
        """(offending step, message) when `session.<steps>` is not declared, phrased for the rule that reads
        (verb "read") or writes ("set") it."""
        problem = self.undeclared(steps)
        if problem is None:
            return None
        index, reason = problem
        if index == 0:
            return 0, f"session.{steps[0]} is {verb} but {reason.removeprefix('is ')}"
        return index, f"session.{dotted(steps)} is {verb} but session.{dotted(steps[:index])} {reason}"

    def lifecycle_state(self, runtime: Runtime, scope: Scope) -> str | None:
        for name, condition in self.states:
            if truthy(condition(runtime, scope)):
                return name
        return None

    def allows(self, before: str, source: str, after: str) -> bool:
        return before == after or after in self.transitions.get((before, source), frozenset())


def session_keys(node: dict[str, Any]) -> set[str]:
    """The `session.<key>` names a JMESPath AST reads (a bare `session` reads no key in particular)."""
    return {path[0] for path in session_paths(node) if path and isinstance(path[0], str)}


def dotted(steps: tuple[Step, ...]) -> str:
    """`session.<steps>` as written (`items[].id`)."""
    return ".".join(steps).replace(f".{ELEMENT}", "[]")
