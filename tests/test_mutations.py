"""Every one-line mutation of the mappings (a flipped condition, a dropped emit, a set or let made null,
a missing stop, a shape field left out) fails some fixture case.

A survivor means behaviour no case pins down: add a case (or an expectation) a user would notice,
not one aimed at the mutant. `python -m tests.mutations` lists the survivors by file:line.
tests/mutations.py's KNOWN_SURVIVORS lists the few that cannot be killed, and why.
"""

from __future__ import annotations

from tests.mutations import KNOWN_SURVIVORS, survivors
from tests.test_mappings import run_case


def test_every_mutant_is_killed() -> None:
    total, alive = survivors(run_case)
    assert total > 600, "the mutation check found suspiciously few rules and shapes to mutate"
    unexpected = [str(m) for m in alive if str(m) not in KNOWN_SURVIVORS]
    assert not unexpected, f"{len(unexpected)} of {total} mutants survived the fixture cases:\n" + "\n".join(unexpected)
    stale = sorted(set(KNOWN_SURVIVORS) - {str(m) for m in alive})
    assert not stale, "KNOWN_SURVIVORS lists mutants that are now killed or gone; remove them:\n" + "\n".join(stale)
