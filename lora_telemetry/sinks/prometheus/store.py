"""A process's metric values, kept in plain dicts.

Recording is a dict update (a few hundred nanoseconds), never a file write:
prometheus_client's multiprocess files cost microseconds per update and
seconds per scrape at thousands of adapters. Scheduler processes publish snapshots of
this store (:mod:`.snapshots`); the main process merges them into ``/metrics``
(:mod:`.exposition`).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from typing import Any

from lora_telemetry.sinks.prometheus.families import BY_NAME, FAMILIES

LabelValues = tuple[str, ...]


class Store:
    """Counters, gauges and histograms of one process, keyed by family and label values.

    One thread writes each family (the hook's: SGLang's event loop, or a scheduler's loop; or,
    for a sink's deferred handlers, the thread that runs deferred work); readers in other threads
    copy a family with one ``dict()`` call, which the GIL makes atomic. So writes take no lock;
    :meth:`copy` takes one only against other readers, and reads the version before it copies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Each write takes a fresh number after its update: two writing threads cannot lose a change
        # (``version += 1`` from two threads can, and a publisher would then skip the last change)
        self._numbers = itertools.count(1)
        self.version = 0
        self.values: dict[str, dict[LabelValues, Any]] = {family.name: {} for family in FAMILIES}
        self._buckets = {f.name: f.buckets for f in FAMILIES if f.type == "histogram"}

    def inc(self, family: str, labels: LabelValues = (), amount: float = 1) -> None:
        series = self.values[family]
        series[labels] = series.get(labels, 0) + amount
        self.version = next(self._numbers)

    def set(self, family: str, labels: LabelValues, value: float) -> None:
        self.values[family][labels] = value
        self.version = next(self._numbers)

    def replace(self, family: str, labels: LabelValues, value: float) -> None:
        """Make ``labels`` the family's only series (info-style gauges)."""
        self.values[family] = {labels: value}
        self.version = next(self._numbers)

    def observe(self, family: str, labels: LabelValues, value: float, times: int = 1) -> None:
        """Histogram observation(s): per-bucket counts (last one +Inf), then the sum."""
        buckets = self._buckets[family]
        series = self.values[family]
        counts = series.get(labels)
        if counts is None:
            counts = series[labels] = [0] * (len(buckets) + 2)
        counts[bisect.bisect_left(buckets, value)] += times
        counts[-1] += value * times
        self.version = next(self._numbers)

    def ensure(self, family: str, labels: LabelValues) -> None:
        """Create a series at zero so that it is visible before anything happened."""
        series = self.values[family]
        if labels not in series:
            histogram = BY_NAME[family].type == "histogram"
            series[labels] = [0] * (len(self._buckets[family]) + 2) if histogram else 0
            self.version = next(self._numbers)

    def keep_only(self, family: str, keep: set[str], move_to: str | None = None) -> None:
        """Drop the series of ``family`` whose first label (``lora_name``) is not in ``keep``; with
        ``move_to``, add their values to that name's series first (counters and histograms, whose
        sums over the label must keep every observation, and a gauge counted up and down)."""
        series = self.values[family]
        gone = [key for key in list(series) if key[0] not in keep]  # list(): atomic against other writers
        for key in gone:
            value = series.pop(key, 0)
            if move_to is not None:
                into = (move_to, *key[1:])
                old = series.get(into)
                if isinstance(value, list):  # a histogram's bucket counts and sum
                    series[into] = value if old is None else [a + b for a, b in zip(old, value, strict=True)]
                else:
                    series[into] = (old or 0) + value
        if gone:
            self.version = next(self._numbers)

    def get(self, family: str, labels: LabelValues = ()) -> Any:
        return self.values[family].get(labels)

    def copy(self) -> tuple[int, dict[str, dict[LabelValues, Any]]]:
        """A copy of every non-empty family, with the version it reflects (or a later one)."""
        with self._lock:
            version = self.version
            families = {name: dict(series) for name, series in list(self.values.items()) if series}
        for name in self._buckets.keys() & families.keys():
            families[name] = {labels: counts[:] for labels, counts in families[name].items()}
        return version, families
