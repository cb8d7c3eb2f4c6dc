"""From a recording to advice: the curves, the server's own setting, the smallest that will do."""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora_telemetry.capacity import curves, prices
from lora_telemetry.capacity.recording import (
    BASE,
    Admission,
    Batch,
    Load,
    Pool,
    Record,
    RecordingError,
    Request,
    read,
)


@dataclass
class Analysis:
    policy: str
    slots: curves.Curve  # gpu tier, per --max-loras-per-batch
    host: curves.Curve | None  # host tier, per --max-loaded-loras; None without request records
    pool: Pool | None  # the recorded pool's settings, if the recording has them
    batches: int
    requests: int
    span_s: float
    seconds: float  # time the analysis took
    stopped_at: RecordingError | None  # with --partial: where reading stopped
    prices: dict[str, float] = field(default_factory=dict)  # seconds per slot load (prices.load_prices)
    copied: dict[str, int] = field(default_factory=dict)  # bytes one slot load of each adapter moves
    overlap: bool = False  # recorded with --enable-lora-overlap-loading (its A records)

    def load_seconds(self, i: int) -> float | None:
        """Slot-load time at curve index ``i``; None where the recording timed no copy."""
        return prices.seconds(self.slots.loads, i, self.prices) if self.prices else None

    def index(self, slots: int) -> int | None:
        """Where ``slots`` is on the curve; a pool larger than the largest size behaves like it."""
        sizes = self.slots.sizes
        if sizes and slots > sizes[-1]:
            return len(sizes) - 1
        return sizes.index(slots) if slots in sizes else None

    def smallest(self, curve: curves.Curve, target: float) -> tuple[int, bool]:
        """The smallest size reaching ``target``, or the one reaching the best rate there is."""
        rates = [curve.hit_rate(i) for i in range(len(curve.sizes))]
        reached = [i for i, rate in enumerate(rates) if rate >= target]
        if reached:
            return curve.sizes[reached[0]], True
        best = max(rates)
        return curve.sizes[next(i for i, rate in enumerate(rates) if rate >= best - 1e-12)], False


@dataclass
class _Split:
    """A recording sorted out in one pass: each scheduler's pool records, the requests."""

    pools: dict[int, list[Record]]
    requests: list[Request]
    loads: list[Load]
    distinct: set[str]
    first: float
    last: float


def split_records(records: Iterable[Record]) -> _Split:
    pools: dict[int, list[Record]] = defaultdict(list)
    requests, loads, distinct, seen = [], [], set(), set()
    first, last = float("inf"), float("-inf")
    for record in records:
        kind = type(record)
        if kind is Request:
            requests.append(record)
            continue
        pools[record.dp].append(record)
        if kind is Batch:
            if record.adapters not in seen:
                seen.add(record.adapters)
                distinct.update(record.adapters)
            first, last = min(first, record.time), max(last, record.time)
        elif kind is Load:
            loads.append(record)
    return _Split(dict(pools), requests, loads, distinct - {BASE}, first, last)


def from_requests(requests: list[Request]) -> list[Record]:
    """A recording of requests only (a bench schedule): one batch per request, in arrival order,
    after the batch that puts the base model into a new pool."""
    ordered = sorted(requests, key=lambda r: r.arrival)
    start = ordered[0].arrival if ordered else 0.0
    return [Batch(start, 0, (BASE,), (0,)), *(Batch(r.arrival, 0, (r.name,), (1,)) for r in ordered)]


def preloaded_at_start(loads: list[Load], requests: list[Request]) -> list[str]:
    """Adapters loaded before the first request (at start-up): the host tier starts with them."""
    first = min(r.arrival for r in requests)
    return list(dict.fromkeys(r.name for r in loads if r.time <= first and r.dp == 0))


def _lru(records: list[Record], sizes: list[int]) -> curves.Curve:
    """All sizes in one pass; the recorded pool's own size replayed by SGLang's rules."""
    curve = curves.lru_curve(records, sizes)
    recorded = next((r for r in records if isinstance(r, Pool)), None)
    if recorded is not None and recorded.policy == "lru":
        curves.with_exact(curve, curves.exact_curve(records, "lru", [recorded.slots]))
    return curve


def merge(parts: list[curves.Curve]) -> curves.Curve:
    """Pools of several data-parallel ranks or replicas: counts add up, size by size."""
    sizes = sorted(set.intersection(*(set(p.sizes) for p in parts)))
    requests: dict[str, int] = defaultdict(int)
    hits: dict[str, np.ndarray] = {}
    loads: dict[str, np.ndarray] = {}
    for part in parts:
        keep = [part.sizes.index(size) for size in sizes]
        for name in part.requests:
            requests[name] += part.requests[name]
            hits[name] = hits.get(name, 0) + part.hits[name][keep]
            loads[name] = loads.get(name, 0) + part.loads[name][keep]
    return curves.Curve(sizes, dict(requests), hits, loads, sum(p.batches for p in parts))


def analyse(path: Path, policy: str | None = None, partial: bool = False,
            progress: Callable[[int], None] = lambda _size: None) -> Analysis:
    """Read ``path`` and compute both tiers' curves (RecordingError if it is malformed)."""
    start = time.perf_counter()
    errors: list[RecordingError] = []
    gc.disable()  # a million records hold no cycles; the collector would only walk them again and again
    try:
        split = split_records(read(path, partial=partial, errors=errors))
    finally:
        gc.enable()
    pools, requests = split.pools, split.requests
    if not split.distinct and not any(isinstance(r, Batch) for part in pools.values() for r in part):
        if not requests:
            raise RecordingError(path, 1, 0, "no batches and no requests recorded")
        pools = {0: from_requests(requests)}
        split = split_records(pools[0])
    settings = next((r for part in pools.values() for r in part if isinstance(r, Pool)), None)
    policy = policy or (settings.policy if settings else "lru")
    sizes = curves.slot_sizes(len(split.distinct))
    if policy == "lru":
        parts = [_lru(part, sizes) for part in pools.values()]
    else:
        priorities = settings.priorities if settings is not None and policy == "priority" else None
        parts = [curves.exact_curve(part, policy, sizes, progress, priorities) for part in pools.values()]
    host = curves.host_curve(requests, preloaded_at_start(split.loads, requests)) if requests else None
    return Analysis(policy=policy, slots=merge(parts), host=host, pool=settings,
                    batches=sum(p.batches for p in parts), requests=len(requests),
                    span_s=max(split.last - split.first, 0.0), seconds=time.perf_counter() - start,
                    stopped_at=errors[0] if errors else None, prices=prices.load_prices(pools),
                    copied=prices.copied_bytes(pools),
                    overlap=any(isinstance(r, Admission) for part in pools.values() for r in part))


def one_line(analysis: Analysis, target: float = 0.95) -> str:
    """The advice in a sentence, against the server's own slot count."""
    pool = analysis.pool
    now = analysis.index(pool.slots) if pool else None
    best, reached = analysis.smallest(analysis.slots, target)
    better = analysis.index(best)
    if now is None or better is None:
        return f"{best} slots would give a gpu hit rate of {analysis.slots.hit_rate(better or 0):.0%}"
    rate_now, rate_best = analysis.slots.hit_rate(now), analysis.slots.hit_rate(better)
    if best <= pool.slots:
        if reached:
            return f"{pool.slots} slots are enough: gpu hit rate {rate_now:.0%}"
        return f"{pool.slots} slots already give the most this traffic allows: gpu hit rate {rate_now:.0%}"
    return (f"with {best} slots instead of {pool.slots}, gpu hit rate would rise from {rate_now:.0%} to "
            f"{rate_best:.0%}" + ("" if reached else " (the most this traffic allows)"))
