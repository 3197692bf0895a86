"""The timing harness: warm-up, device synchronisation, repeats, median and spread.

Timing GPU code without synchronising measures how fast work is *queued*,
not done; timing the first call measures allocation and compilation. So
every measurement here runs ``warmup`` untimed calls, then ``repeats`` timed
calls, each closed by :func:`minigen.synchronize`, and reports the median
(robust to the odd slow call) with the interquartile range as the spread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from . import backend


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the 25th/75th percentiles of the repeats."""

    median: float
    q25: float
    q75: float
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (IQR {self.q25 * 1e3:.3f}-{self.q75 * 1e3:.3f}, n={self.repeats})"


def measure(fn, repeats: int = 20, warmup: int = 3, device: str = "cpu",
            clock=time.perf_counter, sync=backend.synchronize) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` synchronised, timed calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure: need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    q25, median, q75 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), repeats)
