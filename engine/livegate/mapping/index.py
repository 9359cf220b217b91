"""Which rules of a file an input can possibly trigger, decided from the shape of the input.

Most rules test a field of the input (`event.serverContent.interrupted && ...`). Such a `when` can only
hold if the input has that field, so an audio-only Gemini frame need not evaluate the transcript,
barge-in or end-of-turn rules at all. At load, each rule's conditions are read for the event fields
they require; at run time, the input's top two levels of keys select (and cache) the rules that remain.

Only rules that provably do nothing without their field are left out: a `when` that cannot hold, or a
`for_each` over a missing list in a rule without `stop`. Order, `stop` and guarded includes keep their
meaning (tests/test_rule_index.py runs every input both ways and compares).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from livegate.mapping.expressions import Expression

Requirement = frozenset[tuple[str, ...]]  # any one of these key paths (1 or 2 keys deep) must be present

# Applied to null, these give null: a missing field stays missing through them.
_STRICT = {"field", "index", "slice", "identity", "current", "subexpression", "index_expression", "projection",
           "filter_projection", "value_projection", "flatten", "multi_select_dict", "multi_select_list"}
_BASED = {"index_expression", "projection", "filter_projection", "value_projection", "flatten"}
_MAX_CACHED = 256


def _strict(node: dict[str, Any]) -> bool:
    kind = node["type"]
    if kind not in _STRICT:
        return False
    if kind == "subexpression":
        return all(_strict(child) for child in node["children"])
    if kind in _BASED:
        return _strict(node["children"][0])
    return True


def _path(node: dict[str, Any]) -> list[str] | None:
    """Field names `p` such that a non-null value of `node` implies `p` is present, from the scope root."""
    kind = node["type"]
    if kind == "field":
        return [node["value"]]
    if kind in _BASED:
        return _path(node["children"][0])
    if kind == "subexpression":
        children = node["children"]
        head = _path(children[0])
        if head is None or not all(_strict(child) for child in children[1:]):
            return None
        if children[0]["type"] == "field":  # extend through the leading run of plain fields
            for child in children[1:]:
                if child["type"] != "field":
                    break
                head.append(child["value"])
        return head
    return None


def _requires(node: dict[str, Any]) -> Requirement | None:
    """Event key paths one of which must be present for `node` to be truthy; None when there is no such set."""
    kind = node["type"]
    if kind == "and_expression":
        left, right = _requires(node["children"][0]), _requires(node["children"][1])
        return left if left is not None else right
    if kind == "or_expression":
        left, right = _requires(node["children"][0]), _requires(node["children"][1])
        return left | right if left is not None and right is not None else None
    path = _path(node)
    if path is None or len(path) < 2 or path[0] != "event":
        return None
    return frozenset({tuple(path[1:3])})


def requirement(expression: Expression | None) -> Requirement | None:
    return None if expression is None else _requires(expression.ast)


def _rule_requirement(rule: Any) -> Requirement | None:
    needed = requirement(rule.when)
    if needed is None and rule.for_each is not None and not rule.stop and not rule.skip:
        needed = requirement(rule.for_each)  # no elements: the rule applies nothing
    return needed


class RuleIndex:
    """The rules of one file, narrowed to those an input's shape allows (cached per shape)."""

    def __init__(self, rules: tuple[Any, ...]) -> None:
        self.rules = rules
        self.needs = [_rule_requirement(rule) for rule in rules]
        self.relevant = frozenset(path for need in self.needs if need is not None for path in need)
        self.depth2 = any(len(path) == 2 for path in self.relevant)
        self._cache: dict[frozenset[tuple[str, ...]], tuple[Any, ...]] = {}

    def rules_for(self, event: dict[str, Any]) -> tuple[Any, ...]:
        if not self.relevant:
            return self.rules
        relevant = self.relevant
        present: set[tuple[str, ...]] = set()
        for key, value in event.items():
            if (key,) in relevant:
                present.add((key,))
            if self.depth2 and type(value) is dict:
                for inner in value:
                    if (key, inner) in relevant:
                        present.add((key, inner))
        shape = frozenset(present)
        rules = self._cache.get(shape)
        if rules is None:
            rules = tuple(self._narrow(0, len(self.rules), shape))
            if len(self._cache) < _MAX_CACHED:  # shapes are few (subsets of the fields rules test)
                self._cache[shape] = rules
        return rules

    def _narrow(self, start: int, end: int, present: frozenset[tuple[str, ...]]) -> list[Any]:
        out: list[Any] = []
        index = start
        while index < end:
            rule, need = self.rules[index], self.needs[index]
            possible = need is None or not need.isdisjoint(present)
            if rule.skip:  # a guarded include: its block goes (or stays, narrowed) with it
                block_end = index + 1 + rule.skip
                if possible:
                    inner = self._narrow(index + 1, block_end, present)
                    if inner:
                        out.append(dataclasses.replace(rule, skip=len(inner)))
                        out.extend(inner)
                index = block_end
                continue
            if possible:
                out.append(rule)
            index += 1
        return out
