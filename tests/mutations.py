"""A small mutation check of the mappings: does the fixture suite notice when a rule changes?

Two kinds of one-line mutation, applied to the compiled mappings in memory (a rule from a shared
fragment is mutated everywhere it is included):
- `flip`: a rule's `when` (or an emit's `when`) negated;
- `drop`: one `emit` of a rule removed.

A mutant is killed when some fixture case fails against it: an expectation, its snapshot, a rule
failing at runtime, or the state check of mappings/state.yaml. Run it on its own with
`.venv/bin/python -m tests.mutations` (it prints every survivor); tests/test_mutations.py runs it in
the suite.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from livegate.mapping import Mappings, load_mappings
from livegate.mapping.expressions import Expression, truthy
from livegate.mapping.loader import RuleFile
from tests import conftest as guards  # importing it installs the guards on Translator

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "tests" / "__snapshots__" / "test_mappings"


@dataclass(frozen=True)
class Mutant:
    where: str  # file:line of the rule
    rule: str
    kind: str  # "flip when", "flip emit N when", "drop emit N"
    change: Any  # Rule -> Rule

    def __str__(self) -> str:
        return f"{self.where} ({self.rule}): {self.kind}"


class _Negated:
    """An expression with the opposite truth value."""

    def __init__(self, inner: Expression) -> None:
        self.inner = inner

    def __call__(self, runtime: Any, scope: Any) -> bool:
        return not truthy(self.inner(runtime, scope))


def mutants(mappings: Mappings) -> Iterator[Mutant]:
    seen: set[str] = set()
    for rule_file in mappings.rule_files():
        for rule in rule_file.rules:
            if rule.where in seen:
                continue
            seen.add(rule.where)
            if rule.when is not None:
                yield Mutant(rule.where, rule.name, "flip when",
                             lambda r: dataclasses.replace(r, when=_Negated(r.when)))
            for i, emit in enumerate(rule.emits):
                yield Mutant(rule.where, rule.name, f"drop emit {i}",
                             lambda r, i=i: dataclasses.replace(r, emits=r.emits[:i] + r.emits[i + 1:]))
                if emit.when is not None:
                    yield Mutant(rule.where, rule.name, f"flip emit {i} when",
                                 lambda r, i=i: dataclasses.replace(r, emits=tuple(
                                     dataclasses.replace(e, when=_Negated(e.when)) if j == i else e
                                     for j, e in enumerate(r.emits))))


def apply(mappings: Mappings, mutant: Mutant) -> Mappings:
    def mutate(rules: RuleFile) -> RuleFile:
        changed = tuple(mutant.change(r) if r.where == mutant.where else r for r in rules.rules)
        return dataclasses.replace(rules, rules=changed)

    return dataclasses.replace(
        mappings,
        client={k: mutate(v) for k, v in mappings.client.items()},
        upstream={k: mutate(v) for k, v in mappings.upstream.items()},
        lifecycle={k: mutate(v) for k, v in mappings.lifecycle.items()},
    )


def _case_id(path: Path) -> str:
    return f"{path.parent.parent.name}__{path.parent.name}__{path.stem}"


def load_cases() -> list[tuple[str, dict[str, Any], Any]]:
    """(id, case, stored snapshot or None) for every fixture case."""
    out = []
    for path in sorted((ROOT / "fixtures").glob("*/*/*.yaml")):
        case = yaml.safe_load(path.read_text())
        snapshot = SNAPSHOTS / f"test_case[{_case_id(path)}].json"
        stored = json.loads(snapshot.read_text()) if case.get("snapshot", True) and snapshot.exists() else None
        out.append((_case_id(path), case, stored))
    return out


def killed(mappings: Mappings, cases: list[tuple[str, dict[str, Any], Any]], run_case: Any) -> str | None:
    """The id of the first case that fails against `mappings`, or None when every case passes.

    The suite's guards (tests/conftest.py: SDK conformance, declared state, lifecycle transitions,
    translation errors) count as failures too.
    """
    for case_id, case, stored in cases:
        guards._violations.clear()
        guards._translation_errors.clear()
        try:
            transcript = run_case(case, mappings)
        except Exception:
            return case_id
        if stored is not None and json.loads(json.dumps(transcript)) != stored:
            return case_id
        if guards._violations or guards._translation_errors:
            return case_id
    guards._violations.clear()
    guards._translation_errors.clear()
    return None


def survivors(run_case: Any) -> tuple[int, list[Mutant]]:
    logging.disable(logging.CRITICAL)  # mutants fail loudly by design
    try:
        return _survivors(run_case)
    finally:
        logging.disable(logging.NOTSET)


def _survivors(run_case: Any) -> tuple[int, list[Mutant]]:
    mappings = load_mappings()
    cases = load_cases()
    all_mutants = list(mutants(mappings))
    alive = [m for m in all_mutants if killed(apply(mappings, m), cases, run_case) is None]
    return len(all_mutants), alive


if __name__ == "__main__":
    from tests.test_mappings import run_case as _run_case

    total, alive = survivors(_run_case)
    print(f"{total - len(alive)} of {total} mutants killed")
    for mutant in alive:
        print(f"survived: {mutant}")
