"""Retry delays after a failed sync: exponential from 5 s to 15 min, with jitter."""

from __future__ import annotations

import random

BASE_SECONDS = 5.0
MAX_SECONDS = 900.0


def backoff_seconds(failures: int, *, rng: random.Random | None = None) -> float:
    """The wait before retry number `failures` (1 = first retry): full size halved by jitter at most."""
    exp = BASE_SECONDS * 2.0 ** max(0, failures - 1)  # a float power: int ** int is typed Any
    ceiling = min(MAX_SECONDS, exp)
    # "Equal jitter": half fixed, half random, so many accounts failing together do not retry together.
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
