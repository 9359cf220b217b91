"""livegate's event order against OpenAI's, per kind of turn (fixtures/openai_order/).

Each case pins the sequence of event types OpenAI's service sends for one kind of turn (its source named in
the case) and scripts the same turn through livegate's translator. The two sequences are compared after
the same normalisation: a run of one event type counts once, and a run of delta events of different streams
(audio and its transcript interleave as they arrive) counts as the set of its types. The similarity is
2·LCS/(m+n) of the normalised sequences; issue 23 asks for at least 0.97 on every kind of turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_mappings import run_case

CASES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "openai_order").glob("*.yaml"))
THRESHOLD = 0.97


def normalise(types: list[str]) -> list[str]:
    """Runs of one type once; a run of deltas of several streams as its sorted set of types."""
    out: list[str] = []
    run: set[str] = set()
    for kind in [*types, ""]:
        if kind.endswith(".delta"):
            run.add(kind)
            continue
        if run:
            out.extend(sorted(run))
            run = set()
        if kind and (not out or out[-1] != kind):
            out.append(kind)
    return out


def lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def similarity(a: list[str], b: list[str]) -> float:
    a, b = normalise(a), normalise(b)
    return 2 * lcs(a, b) / (len(a) + len(b)) if a or b else 1.0


def livegate_types(case: dict[str, Any]) -> list[str]:
    steps = [{k: v for k, v in step.items() if k != "setup"} for step in case["steps"]]
    transcript = run_case({**case, "steps": steps})
    return [message["type"] for entry, step in zip(transcript, case["steps"], strict=True) if not step.get("setup")
            for message in entry["to_client"]]


def test_the_measure() -> None:
    assert normalise(["a.delta", "b.delta", "a.delta", "c", "c", "d"]) == ["a.delta", "b.delta", "c", "d"]
    assert similarity(["x", "y", "z"], ["x", "y", "z"]) == 1.0
    assert similarity(["x", "y"], ["y", "x"]) == 0.5
    assert similarity(["x", "y", "z", "w"], ["x", "z", "w"]) == pytest.approx(6 / 7)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_order_matches_openai(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    ours = livegate_types(case)
    score = similarity(case["openai"], ours)
    assert score >= THRESHOLD, (
        f"{path.stem}: similarity {score:.3f} < {THRESHOLD}\n openai:   {normalise(case['openai'])}\n"
        f" livegate: {normalise(ours)}")
