"""The routing strategies: which of the deployments that can take a session gets it. Pure functions of the
candidates, their live sessions and a random source (seeded in tests), as LiteLLM's router decides:

- `order` first: only the candidates with the lowest `order` compete (no `order` counts after any number);
- `simple-shuffle`: a random pick weighted by `weight`, else by `rpm`, else by `tpm`, the first any candidate
  sets (one that does not weighs 0), else uniform;
- `least-busy`: the fewest live sessions, ties broken at random.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from livegate.config import ModelRoute


def _priority(route: ModelRoute) -> float:
    return math.inf if route.order is None else route.order


def pick(strategy: str, candidates: Sequence[ModelRoute], live: Mapping[str, int], rng: random.Random) -> ModelRoute:
    """One of `candidates` (not empty), by `strategy` ("simple-shuffle" or "least-busy")."""
    first = min(_priority(c) for c in candidates)
    competing = [c for c in candidates if _priority(c) == first]
    if strategy == "least-busy":
        fewest = min(live.get(c.deployment, 0) for c in competing)
        return rng.choice([c for c in competing if live.get(c.deployment, 0) == fewest])
    for by in ("weight", "rpm", "tpm"):
        weights = [float(getattr(c, by) or 0) for c in competing]
        if any(w > 0 for w in weights):
            return rng.choices(competing, weights=weights)[0]
    return rng.choice(competing)
