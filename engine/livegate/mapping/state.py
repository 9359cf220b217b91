"""The declared session state (mappings/state.yaml): its keys, who may write them, and the lifecycle.

The loader checks every expression's `session.<key>` reads and every rule's `set` against the
declaration. `StateSpec.check_types` serves the test suite, which checks the types after every input;
`StateSpec.lifecycle_state` and `allows` serve the translator, which checks at run time that each change of
lifecycle state is a listed transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from livegate.mapping.expressions import Expression, Runtime, Scope, truthy

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True)
class KeySpec:
    name: str
    type: str
    writers: frozenset[str]
    meaning: str


@dataclass
class StateSpec:
    keys: dict[str, KeySpec] = field(default_factory=dict)
    states: tuple[tuple[str, Expression], ...] = ()
    transitions: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)  # (from, input) -> to

    def check_types(self, session: dict[str, Any]) -> list[str]:
        """Problems with `session` against the declaration: undeclared keys, values of the wrong type."""
        problems = []
        for key, value in session.items():
            spec = self.keys.get(key)
            if spec is None:
                problems.append(f"session.{key} is not declared in mappings/state.yaml")
            elif not isinstance(value, _TYPES[spec.type]) or (spec.type != "boolean" and isinstance(value, bool)):
                problems.append(f"session.{key} should be {spec.type}, holds {type(value).__name__}: {value!r:.80}")
        return problems

    @cached_property
    def lifecycle_keys(self) -> frozenset[str]:
        """The session keys the lifecycle states are made of (a state can only change when one of them does)."""
        return frozenset().union(*(session_keys(condition.ast) for _, condition in self.states))

    def lifecycle_state(self, runtime: Runtime, scope: Scope) -> str | None:
        for name, condition in self.states:
            if truthy(condition(runtime, scope)):
                return name
        return None

    def allows(self, before: str, source: str, after: str) -> bool:
        return before == after or after in self.transitions.get((before, source), frozenset())


def session_keys(node: dict[str, Any]) -> set[str]:
    """The `session.<key>` names a JMESPath AST reads (a bare `session` reads no key in particular)."""
    found: set[str] = set()
    _walk(node, found)
    return found


def _walk(node: dict[str, Any], found: set[str]) -> None:
    children = node.get("children", [])
    if node["type"] == "subexpression" and len(children) >= 2 and _is_field(children[0], "session"):
        key = _leading_field(children[1])
        if key is not None:
            found.add(key)
    for child in children:
        if isinstance(child, dict):
            _walk(child, found)


def _is_field(node: dict[str, Any], name: str) -> bool:
    return node["type"] == "field" and node["value"] == name


def _leading_field(node: dict[str, Any]) -> str | None:
    """`x` of `x`, `x[0]`, `x[*]...`: the field a path step starts with."""
    while node["type"] != "field":
        if node["type"] not in ("index_expression", "projection", "filter_projection", "flatten",
                                "value_projection") or not node.get("children"):
            return None
        node = node["children"][0]
    return str(node["value"])
