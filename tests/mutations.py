"""A mutation check of the mappings: does the fixture suite notice when a rule or a shape changes?

One-line mutations, applied to the compiled mappings in memory (a rule from a shared fragment is
mutated everywhere it is included):
- `flip when`: a rule's `when` (or an emit's `when`) negated;
- `drop emit N`: one `emit` of a rule removed;
- `null set X`: a `set` writes null instead of its value (`drop set X` where the value is null already:
  the key is no longer cleared);
- `null let X`: a `let` name bound to null;
- `no stop`: a rule that stops (a `refuse` included) lets the rules after it run (not generated for a
  rule that is last wherever it runs: there nothing comes after it);
- `drop shape field`: one field of a named template (shapes/), at any depth, left out.

A mutant is killed when some fixture case fails against it: an expectation, its snapshot, a rule
failing at runtime, or the state check of mappings/state.yaml. An exception other than a failed
expectation is not a kill: it is re-raised (the harness, or the translator, is broken).

Speed (it runs in the suite): one traced run of every case records which rule files each case runs,
which rules it reaches and which shapes it applies. A mutant is then tried first against the cases
that reach what it changes, and never against a case that runs none of the files holding its rule
(or never applies its shape): there it cannot change anything. Most mutants die on their first case.

Run it on its own with `.venv/bin/python -m tests.mutations` (it prints every survivor);
tests/test_mutations.py runs it in the suite.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livegate.mapping import Mappings, load_mappings
from livegate.mapping.expressions import WHEN_KEY, Expression, compile_template, truthy
from livegate.mapping.index import RuleIndex
from livegate.mapping.loader import Rule, RuleFile
from livegate.mapping.yamlpos import Located
from livegate.paths import MAPPINGS_DIR
from tests import conftest as guards  # importing it installs the guards on Translator

ROOT = Path(__file__).resolve().parent.parent

# Mutants no fixture case can kill, each for the reason given; the suite fails when one of them is
# killed after all, or no longer exists (the list is then out of date).
KNOWN_SURVIVORS = {
    "mappings/lifecycle/user_idle.yaml:7 (the user spoke or a turn is under way, so the timer is dropped "
    "(the next response.done sets it again)): no stop":
        "equivalent: its set clears user_idle_at_ms, which the only rule after it requires",
    "mappings/client/output_audio_buffer.clear.yaml:10 (WebRTC only): no stop":
        "equivalent: the refusal is for WebSockets, where session.playback (the next rule's condition) is "
        "never set: only a WebRTC call's audio starts the output buffer",
    "mappings/lifecycle/upstream_resume.yaml:73 (a fresh session starts with the conversation as history (a "
    "transcription session has none to give)): drop set session.handle_item":
        "equivalent: a fresh session clears the handle too, and handle_item is read only by a move with a "
        "handle, which needs a new one, whose arrival sets handle_item again",
    "mappings/shared/open_response.yaml:4 (open a response): drop set session.usage_owed_by":
        "not pinned on purpose: it differs only when Gemini reports a turn's usage twice after its "
        "response.done went out with usage, where today the second report is credited to the next "
        "response (against usageMetadata.yaml's intent); the usage ledger rewrite (issue 25 §1) owns that",
    "mappings/lifecycle/mcp_called.yaml:47 (done with the response's MCP call): flip when":
        "equivalent: mcp_finish is read only by the include before this rule, after the outcome rule of the same "
        "event set it afresh, so a value left over is never read",
    "mappings/lifecycle/mcp_called.yaml:47 (done with the response's MCP call): drop set session.mcp_finish":
        "equivalent: as its flip (mcp_finish is set afresh by every mcp_called before it is read)",
    "mappings/shapes/guardrails.yaml:25 (shape no_usage): drop shape field output.thinking":
        "equivalent: no_usage has the ledger's shape of a turn's usage, and nothing reads a turn's thinking count "
        "(shapes/usage.yaml reports thinking inside output_tokens)",
}
SNAPSHOTS = ROOT / "tests" / "__snapshots__" / "test_mappings"
Case = tuple[str, dict[str, Any], Any]  # (id, case, stored snapshot or None)


@dataclass(frozen=True)
class Mutant:
    where: str  # file:line of the rule, or of the shape field
    rule: str  # the rule's name, or `shape <name>`
    kind: str
    change: Callable[[Mappings], Mappings] = field(repr=False, compare=False)
    shape: str | None = None  # a shape mutant: the shape it changes

    def __str__(self) -> str:
        return f"{self.where} ({self.rule}): {self.kind}"


class _Negated:
    """An expression with the opposite truth value; its AST says so too (the rule index reads it)."""

    def __init__(self, inner: Expression) -> None:
        self.inner = inner
        self.ast = {"type": "not_expression", "children": [inner.ast]}

    def __call__(self, runtime: Any, scope: Any) -> bool:
        return not truthy(self.inner(runtime, scope))


def _null(runtime: Any, scope: Any) -> None:
    return None


def _rule_mutant(rule: Rule, kind: str, change: Callable[[Rule], Rule]) -> Mutant:
    where = rule.where

    def mutate(mappings: Mappings) -> Mappings:
        def rules(files: dict[str, RuleFile]) -> dict[str, RuleFile]:
            return {k: dataclasses.replace(v, rules=tuple(change(r) if r.where == where else r for r in v.rules))
                    if any(r.where == where for r in v.rules) else v for k, v in files.items()}

        return dataclasses.replace(mappings, client=rules(mappings.client), upstream=rules(mappings.upstream),
                                   lifecycle=rules(mappings.lifecycle))

    return Mutant(where, rule.name, kind, mutate)


def _raw_rules(root: Path) -> dict[str, dict[str, Any]]:
    """file:line -> the rule as written, for every rule in mappings/ (the `where` a compiled Rule carries)."""
    out = {}
    for path in sorted(root.glob("*/*.yaml")):
        doc = Located(str(path.relative_to(root.parent)), path.read_text())
        for i, raw in enumerate((doc.data or {}).get("rules") or []) if isinstance(doc.data, dict) else ():
            out[f"{doc.file}:{doc.position(('rules', i)).line}"] = raw
    return out


def rule_mutants(mappings: Mappings) -> Iterator[Mutant]:
    raw_rules = _raw_rules(mappings.root)
    followed = {rule.where for f in mappings.rule_files() for rule in f.rules[:-1]}
    seen: set[str] = set()
    for rule_file in mappings.rule_files():
        for rule in rule_file.rules:
            if rule.where in seen:
                continue
            seen.add(rule.where)
            raw = raw_rules.get(rule.where, {})
            if rule.when is not None:
                yield _rule_mutant(rule, "flip when", lambda r: dataclasses.replace(r, when=_Negated(r.when)))
            for i, emit in enumerate(rule.emits):
                yield _rule_mutant(rule, f"drop emit {i}",
                                   lambda r, i=i: dataclasses.replace(r, emits=r.emits[:i] + r.emits[i + 1:]))
                if emit.when is not None:
                    yield _rule_mutant(rule, f"flip emit {i} when", lambda r, i=i: dataclasses.replace(r, emits=tuple(
                        dataclasses.replace(e, when=_Negated(e.when)) if j == i else e for j, e in enumerate(r.emits))))
            for i, (keys, _) in enumerate(rule.sets):
                target = "session." + ".".join(keys)
                if (raw.get("set") or {}).get(target, "") is None:
                    yield _rule_mutant(rule, f"drop set {target}",
                                       lambda r, i=i: dataclasses.replace(r, sets=r.sets[:i] + r.sets[i + 1:]))
                else:
                    yield _rule_mutant(rule, f"null set {target}", lambda r, i=i: dataclasses.replace(
                        r, sets=tuple((k, _null if j == i else b) for j, (k, b) in enumerate(r.sets))))
            for i, (name, _) in enumerate(rule.lets):
                yield _rule_mutant(rule, f"null let {name}", lambda r, i=i: dataclasses.replace(
                    r, lets=tuple((k, _null if j == i else b) for j, (k, b) in enumerate(r.lets))))
            if rule.stop and rule.where in followed:
                yield _rule_mutant(rule, "no stop", lambda r: dataclasses.replace(r, stop=False))


def _field_paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """The paths of every field of a template (objects at any depth, objects inside lists too)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != WHEN_KEY:
                yield (*path, key)
                yield from _field_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _field_paths(item, (*path, i))


def _without(value: Any, path: tuple[str | int, ...]) -> Any:
    out = copy.deepcopy(value)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    del holder[path[-1]]
    return out


def shape_mutants(root: Path) -> Iterator[Mutant]:
    for path in sorted((root / "shapes").glob("*.yaml")):
        doc = Located(str(path.relative_to(root.parent)), path.read_text())
        for name, template in doc.data["shapes"].items():
            for field_path in _field_paths(template):
                position = doc.key_position(("shapes", name, *field_path))
                build = compile_template(doc, ("shapes", name), _without(template, field_path))

                def mutate(mappings: Mappings, name: str = name, build: Any = build) -> Mappings:
                    return dataclasses.replace(mappings, shapes={**mappings.shapes, name: build})

                dotted = ".".join(str(step) for step in field_path)
                yield Mutant(f"{doc.file}:{position.line}", f"shape {name}", f"drop shape field {dotted}", mutate,
                             shape=name)


def mutants(mappings: Mappings) -> Iterator[Mutant]:
    yield from rule_mutants(mappings)
    yield from shape_mutants(mappings.root)


# -- coverage: what each case runs -------------------------------------------------------------------------

class _Reached:
    """A rule's condition that records, before answering as the original, that the rule was reached."""

    def __init__(self, inner: Any, where: str, log: set[str]) -> None:
        self.inner, self.where, self.log = inner, where, log
        self.ast = inner.ast if inner is not None else {"type": "literal", "value": True, "children": []}

    def __call__(self, runtime: Any, scope: Any) -> Any:
        self.log.add(self.where)
        return True if self.inner is None else self.inner(runtime, scope)


class _TracedIndex:
    def __init__(self, inner: Any, file: str, log: set[str]) -> None:
        self.inner, self.file, self.log = inner, file, log

    def rules_for(self, event: dict[str, Any]) -> tuple[Any, ...]:
        self.log.add(self.file)
        return self.inner.rules_for(event)


class _TracedRuleFile:
    """A rule file whose rules record being reached, and whose index records the file being run."""

    def __init__(self, inner: RuleFile, log: set[str]) -> None:
        self.on, self.file = inner.on, inner.file
        self.rules = tuple(dataclasses.replace(r, when=_Reached(r.when, r.where, log)) for r in inner.rules)
        self.index = _TracedIndex(RuleIndex(self.rules), inner.file, log)


@dataclass
class Coverage:
    files: dict[str, set[str]] = field(default_factory=dict)  # case id -> rule files run
    rules: dict[str, set[str]] = field(default_factory=dict)  # case id -> rules reached (file:line)
    shapes: dict[str, set[str]] = field(default_factory=dict)  # case id -> shapes applied
    seconds: dict[str, float] = field(default_factory=dict)


def coverage(mappings: Mappings, cases: list[Case], run_case: Any) -> Coverage:
    """Run every case once on traced mappings (same behaviour, recorded); each must pass unmutated."""
    log: set[str] = set()

    def traced(files: dict[str, RuleFile]) -> dict[str, Any]:
        return {k: _TracedRuleFile(v, log) for k, v in files.items()}

    def shape(name: str, build: Any) -> Any:
        def run(runtime: Any, scope: Any) -> Any:
            log.add(f"shape {name}")
            return build(runtime, scope)
        return run

    traced_mappings = dataclasses.replace(mappings, client=traced(mappings.client), upstream=traced(mappings.upstream),
                                          lifecycle=traced(mappings.lifecycle),
                                          shapes={n: shape(n, b) for n, b in mappings.shapes.items()})
    result = Coverage()
    for case_id, case, stored in cases:
        log.clear()
        start = time.perf_counter()
        failure = _failure(traced_mappings, case, stored, run_case)
        if failure:
            raise AssertionError(f"{case_id} fails without any mutation: {failure}")
        result.seconds[case_id] = time.perf_counter() - start
        result.files[case_id] = {entry for entry in log if entry.endswith(".yaml")}
        result.rules[case_id] = {entry for entry in log if ".yaml:" in entry}
        result.shapes[case_id] = {entry[6:] for entry in log if entry.startswith("shape ")}
    if not any(result.files.values()):
        raise AssertionError("tracing saw no rule file run: the harness no longer matches the translator")
    return result


def candidates(mutant: Mutant, mappings: Mappings, cases: list[Case], cover: Coverage) -> list[Case]:
    """The cases that can notice `mutant`, those that reach what it changes first, quickest first."""
    if mutant.shape is not None:
        able = [c for c in cases if mutant.shape in cover.shapes[c[0]]]
        return sorted(able, key=lambda c: cover.seconds[c[0]])
    holders = {f.file for f in mappings.rule_files() if any(r.where == mutant.where for r in f.rules)}
    able = [c for c in cases if cover.files[c[0]] & holders]
    return sorted(able, key=lambda c: (mutant.where not in cover.rules[c[0]], cover.seconds[c[0]]))


# -- running -------------------------------------------------------------------------------------------------

def _case_id(path: Path) -> str:
    return f"{path.parent.parent.name}__{path.parent.name}__{path.stem}"


def load_cases() -> list[Case]:
    import yaml

    out = []
    for path in sorted((ROOT / "fixtures").glob("*/*/*.yaml")):
        case = yaml.safe_load(path.read_text())
        snapshot = SNAPSHOTS / f"test_case[{_case_id(path)}].json"
        stored = json.loads(snapshot.read_text()) if case.get("snapshot", True) and snapshot.exists() else None
        out.append((_case_id(path), case, stored))
    return out


def _failure(mappings: Mappings, case: dict[str, Any], stored: Any, run_case: Any) -> str | None:
    """Why `case` fails against `mappings` (expectation, snapshot, the suite's guards), or None."""
    guards._violations.clear()
    guards._translation_errors.clear()
    try:
        transcript = run_case(case, mappings)
    except AssertionError as exc:
        return f"expectation: {exc}"
    finally:
        violations, errors = list(guards._violations), list(guards._translation_errors)
        guards._violations.clear()
        guards._translation_errors.clear()
    if stored is not None and json.loads(json.dumps(transcript)) != stored:
        return "snapshot"
    if violations or errors:
        return f"guards: {(violations + errors)[0]}"
    return None


def killed(mappings: Mappings, cases: list[Case], run_case: Any) -> str | None:
    """The id of the first case that fails against `mappings`, or None when every case passes."""
    for case_id, case, stored in cases:
        if _failure(mappings, case, stored, run_case):
            return case_id
    return None


def survivors(run_case: Any) -> tuple[int, list[Mutant]]:
    logging.disable(logging.CRITICAL)  # mutants fail loudly by design
    try:
        mappings = load_mappings(MAPPINGS_DIR)
        cases = load_cases()
        cover = coverage(mappings, cases, run_case)
        all_mutants = list(mutants(mappings))
        alive = [m for m in all_mutants
                 if killed(m.change(mappings), candidates(m, mappings, cases, cover), run_case) is None]
        return len(all_mutants), alive
    finally:
        logging.disable(logging.NOTSET)


if __name__ == "__main__":
    from tests.test_mappings import run_case as _run_case

    started = time.perf_counter()
    total, alive = survivors(_run_case)
    print(f"{total - len(alive)} of {total} mutants killed in {time.perf_counter() - started:.0f} s")
    by_kind: dict[str, int] = defaultdict(int)
    for mutant in alive:
        by_kind[mutant.kind.split(" ")[0] + " " + mutant.kind.split(" ")[1]] += 1
        known = KNOWN_SURVIVORS.get(str(mutant))
        print(f"survived: {mutant}" + (f"  [known: {known}]" if known else ""))
    print(dict(by_kind))
