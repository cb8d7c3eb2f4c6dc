"""Timing helpers: repeat a call, report median and p95."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median: float
    p95: float
    runs: int

    def ns(self) -> str:
        return f"median {self.median * 1e9:,.0f} ns, p95 {self.p95 * 1e9:,.0f} ns ({self.runs:,} runs)"

    def ms(self) -> str:
        return f"median {self.median * 1e3:,.1f} ms, p95 {self.p95 * 1e3:,.1f} ms ({self.runs} runs)"


def per_call(fn: Callable[[], object], calls: int = 2000, rounds: int = 25) -> Timing:
    """Per-call time of ``fn``: each round times ``calls`` calls; median and p95 over rounds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return summarize(samples)


def summarize(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Timing(statistics.median(ordered), p95, len(ordered))
