"""Every one-line mutation of the mappings (a flipped condition, a dropped emit) fails some fixture case.

A survivor means a rule whose behaviour no case pins down: add a case (or an expectation) that
would notice. `python -m tests.mutations` lists the survivors by file:line.
"""

from __future__ import annotations

from tests.mutations import survivors
from tests.test_mappings import run_case


def test_every_mutant_is_killed() -> None:
    total, alive = survivors(run_case)
    assert total > 100, "the mutation check found suspiciously few rules to mutate"
    assert not alive, f"{len(alive)} of {total} mutants survived the fixture cases:\n" + "\n".join(map(str, alive))
