"""Read our series back from a ``/metrics`` text: for the demo's table, the bench and tests."""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Metrics:
    """Parsed samples of one scrape, with the sums and quantiles the demo and tests need."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        self.types = {f.name: f.type for f in text_string_to_metric_families(text)}

    @classmethod
    def fetch(cls, url: str, timeout: float = 10.0) -> Metrics:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as response:
            return cls(response.read().decode())

    @classmethod
    def combined(cls, scrapes: list[Metrics]) -> Metrics:
        """Several servers' scrapes as one, so that sums and quantiles cover a fleet."""
        out = cls("")
        out.samples = [s for m in scrapes for s in m.samples]
        out.types = {k: v for m in scrapes for k, v in m.types.items()}
        out.text = "".join(m.text for m in scrapes)
        return out

    def select(self, name: str, **match: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in match.items())]

    def total(self, name: str, **match: str) -> float:
        return sum(s.value for s in self.select(name, **match))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for s in self.select(name, **match):
            out[s.labels.get(label, "")] += s.value
        return dict(out)

    def quantile(self, histogram: str, q: float, **match: str) -> float | None:
        """``histogram_quantile`` over the buckets of the matching series (summed)."""
        buckets: dict[float, float] = defaultdict(float)
        for s in self.select(histogram + "_bucket", **match):
            buckets[float(s.labels["le"])] += s.value
        return histogram_quantile(q, sorted(buckets.items()))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's linear interpolation inside the bucket that holds the q-th observation."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
