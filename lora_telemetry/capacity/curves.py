"""Hit rate and slot loads for every pool size, from one recording.

For LRU one pass is enough (Mattson's stack algorithm): before each batch an adapter's rank
is the number of distinct adapters marked more recently; with room for ``c`` adapters it
holds a slot exactly when its rank is below ``c``, for every ``c`` at once. Batch marking
keeps this exact: a batch marks all its adapters before loading any, and its victims are the
least recent residents outside it, so the residents stay the ``c`` most recent adapters.
The one pass assumes the base model keeps its slot and pinned adapters keep theirs (room for
``slots - 1 - pinned`` adapters) and that batches fit; :func:`exact_curve` replays SGLang's
rules for each size instead (FIFO, or to check).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lora_telemetry.capacity.recording import BASE, Admission, Batch, Load, Record, Request, Unload
from lora_telemetry.capacity.simulator import PoolFull, PoolSimulator


@dataclass
class Curve:
    """Per size (slot count, or host capacity): requests that found their adapter in place and
    loads, per adapter. The base model is not counted: it keeps its slot."""

    sizes: list[int]
    requests: dict[str, int]
    hits: dict[str, np.ndarray]  # per adapter, one entry per size
    loads: dict[str, np.ndarray]
    batches: int

    def hit_rate(self, i: int, name: str | None = None) -> float:
        names = [name] if name else list(self.requests)
        asked = sum(self.requests[n] for n in names)
        return sum(int(self.hits[n][i]) for n in names) / asked if asked else 1.0

    def loads_per_1000(self, i: int, name: str | None = None) -> float:
        names = [name] if name else list(self.loads)
        return 1000 * sum(int(self.loads[n][i]) for n in names) / self.batches if self.batches else 0.0


class _Ranks:
    """Rank counts per adapter: how often an adapter was wanted at each stack depth."""

    def __init__(self) -> None:
        self.requests: dict[str, Counter[int]] = {}
        self.loads: dict[str, Counter[int]] = {}

    def add(self, name: str, rank: int, requests: int, batches: int = 1) -> None:
        if name not in self.loads:
            self.requests[name], self.loads[name] = Counter(), Counter()
        if batches:
            self.loads[name][rank] += batches
        if requests:
            self.requests[name][rank] += requests

    def curve(self, sizes: list[int], room: Callable[[int], int], batches: int) -> Curve:
        """``room(size)``: how many adapters a pool of that size holds besides the kept ones."""
        depth = len(self.loads) + 1  # ranks run from 0 to distinct - 1; "never seen" is depth
        rooms = np.clip([room(size) for size in sizes], 0, depth)
        hits, loads, asked = {}, {}, {}
        for name, ranks in self.loads.items():
            wanted = _histogram(self.requests[name], depth)
            loaded = _histogram(ranks, depth)
            hit_below = np.concatenate(([0], np.cumsum(wanted)))  # hit_below[c]: requests with rank < c
            load_below = np.concatenate(([0], np.cumsum(loaded)))
            hits[name] = hit_below[rooms]
            loads[name] = load_below[-1] - load_below[rooms]
            asked[name] = int(hit_below[-1])
        return Curve(sizes, asked, hits, loads, batches)


def _histogram(counts: Counter[int], depth: int) -> np.ndarray:
    out = np.zeros(depth + 1, dtype=np.int64)
    for rank, count in counts.items():
        out[min(rank, depth)] += count
    return out


NEVER = 1 << 30  # the rank of an adapter not seen before


def lru_ranks(records: Iterable[Record]) -> tuple[_Ranks, int, int]:
    """One pass over a scheduler's records: rank counts, batches, most adapters pinned at once.

    A batch equal to the one before (a decode step) leaves every adapter where it was, so runs
    of them are counted, not replayed.
    """
    ranks, stack, pinned = _Ranks(), [], set()
    last: tuple[str, ...] = ()
    top: list[tuple[str, int]] = []  # the last batch's adapters and their ranks after it
    repeats, first_scheduled = 0, Counter()  # since the last distinct batch
    batches = most_pinned = 0

    def settle() -> None:
        for name, rank in top:
            ranks.add(name, rank, first_scheduled[name], repeats)

    for record in records:
        if isinstance(record, Batch):
            batches += 1
            if record.adapters == last:
                repeats += 1
                for name, count in zip(record.adapters, record.new_requests, strict=True):
                    if count:
                        first_scheduled[name] += count
                continue
            settle()
            repeats, first_scheduled = 0, Counter()
            tracked = [name for name in record.adapters if name != BASE and name not in pinned]
            before = [_rank(stack, name) for name in tracked]
            for name in tracked:
                if name in stack:
                    stack.remove(name)
                stack.insert(0, name)
            counts = dict(zip(record.adapters, record.new_requests, strict=True))
            for name, rank in zip(tracked, before, strict=True):
                ranks.add(name, rank, counts[name])
            top = [(name, len(tracked) - 1 - i) for i, name in enumerate(tracked)]
            top += [(name, 0) for name in record.adapters if name in pinned]  # pinned: always in place
            for name, rank in top[len(tracked):]:
                ranks.add(name, rank, counts[name])
            last = record.adapters
        elif isinstance(record, Admission) and record.name != BASE:  # a lookup that moves nothing
            ranks.add(record.name, 0 if record.name in pinned else _rank(stack, record.name), 1, 0)
        elif isinstance(record, Load | Unload):
            settle()
            repeats, first_scheduled, last, top = 0, Counter(), (), []
            if record.name in stack:
                stack.remove(record.name)
            if isinstance(record, Load) and record.pinned:
                pinned.add(record.name)
                most_pinned = max(most_pinned, len(pinned))
            else:
                pinned.discard(record.name)
    settle()
    return ranks, batches, most_pinned


def _rank(stack: list[str], name: str) -> int:
    try:
        return stack.index(name)
    except ValueError:
        return NEVER


def slot_sizes(distinct: int) -> list[int]:
    """Slot counts worth showing: from 2 to one per adapter plus the base model's."""
    return list(range(2, max(distinct + 1, 2) + 1))


def lru_curve(records: Sequence[Record], sizes: list[int] | None = None) -> Curve:
    ranks, batches, pinned = lru_ranks(records)
    sizes = sizes or slot_sizes(len(ranks.loads))
    return ranks.curve(sizes, lambda slots: slots - 1 - pinned, batches)


def host_curve(requests: Iterable[Request], preloaded: Sequence[str] = (), sizes: list[int] | None = None) -> Curve:
    """The host tier (``--max-loaded-loras``): an LRU over requests in arrival order, starting
    with the ``preloaded`` adapters (loaded at start-up, in that order)."""
    ordered = sorted((r for r in requests if r.name != BASE), key=lambda r: r.arrival)
    batches = [*(Batch(0.0, 0, (name,), (0,)) for name in preloaded),
               *(Batch(r.arrival, 0, (r.name,), (1,)) for r in ordered)]
    ranks, count, _ = lru_ranks(batches)
    sizes = sizes or list(range(1, len(ranks.loads) + 1))
    return ranks.curve(sizes, lambda capacity: capacity, count)


def exact_curve(records: Sequence[Record], policy: str, sizes: list[int],
                progress: Callable[[int], None] = lambda _size: None,
                priorities: dict[str, int] | None = None) -> Curve:
    """SGLang's rules replayed once per slot count; batches larger than the pool are split.
    A size whose pool cannot take a batch at all (pinned adapters hold it) is left out."""
    hits, loads, asked, fitting = {}, {}, Counter(), []
    batches = sum(1 for r in records if isinstance(r, Batch))
    for size in sizes:
        try:
            pool = PoolSimulator(size, policy, priorities).replay(_fitting(records, size))
        except PoolFull:
            continue
        i = len(fitting)
        fitting.append(size)
        for name in set(pool.hits) | set(pool.misses) | set(pool.slot_loads):
            if name == BASE:
                continue
            hits.setdefault(name, {})[i] = pool.hits[name]
            loads.setdefault(name, {})[i] = pool.slot_loads[name]
            asked[name] = pool.hits[name] + pool.misses[name]
        progress(size)
    as_array = {name: np.zeros(len(fitting), dtype=np.int64) for name in asked}
    return Curve(fitting, dict(asked),
                 {name: _filled(as_array[name], hits.get(name, {})) for name in asked},
                 {name: _filled(as_array[name].copy(), loads.get(name, {})) for name in asked}, batches)


def _filled(array: np.ndarray, values: dict[int, int]) -> np.ndarray:
    for i, value in values.items():
        array[i] = value
    return array


def _fitting(records: Iterable[Record], size: int) -> Iterable[Record]:
    """Batches with more adapters than the pool has slots, cut into pieces that fit."""
    for record in records:
        if isinstance(record, Batch) and len(record.adapters) > size:
            for start in range(0, len(record.adapters), size):
                yield Batch(record.time, record.dp, record.adapters[start:start + size],
                            record.new_requests[start:start + size])
        else:
            yield record


def with_exact(curve: Curve, exact: Curve) -> Curve:
    """``curve`` with the sizes ``exact`` replayed put in their place (the server's own setting,
    where the one pass's assumptions may not hold: batches that fill every slot)."""
    for j, size in enumerate(exact.sizes):
        if size not in curve.sizes:
            continue
        i = curve.sizes.index(size)
        for name in curve.requests:
            curve.hits[name][i] = exact.hits[name][j] if name in exact.hits else 0
            curve.loads[name][i] = exact.loads[name][j] if name in exact.loads else 0
    return curve
