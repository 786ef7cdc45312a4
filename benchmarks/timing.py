"""Wall-clock medians for the benchmarks that time whole requests (no CUDA synchronisation: the engine's
answer arriving is the end of the work)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))
