"""What slot loads cost in time, from the copies a recording timed (its ``C`` records).

The replays say how many slot loads a policy, a plan or a slot count makes; these prices turn the
count into seconds, the unit a slot load costs a request its TTFT in. Both the planner and the
slot-count advice price with them, so their figures agree.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lora_telemetry.capacity.recording import BASE, Copy, Record


def load_prices(pools: dict[int, list[Record]]) -> dict[str, float]:
    """Seconds per slot load by adapter: the mean of the recorded copies of adapters of its size
    (a plan moves loads between adapters, and a copy's time follows its bytes); "" maps to the
    mean of all, for an adapter the recording never copied. Empty when no copy was timed."""
    by_size: dict[int, list[float]] = {}
    size_of: dict[str, int] = {}
    for records in pools.values():
        for record in records:
            if isinstance(record, Copy) and record.name != BASE:
                by_size.setdefault(record.bytes, []).append(record.seconds)
                size_of[record.name] = record.bytes
    if not by_size:
        return {}
    every = [seconds for group in by_size.values() for seconds in group]
    prices = {name: sum(by_size[size]) / len(by_size[size]) for name, size in size_of.items()}
    return {**prices, "": sum(every) / len(every)}


def copied_bytes(pools: dict[int, list[Record]]) -> dict[str, int]:
    """Bytes one slot load of each copied adapter moves: what its host copy holds."""
    return {r.name: r.bytes for records in pools.values() for r in records if isinstance(r, Copy) and r.name != BASE}


def seconds(loads: dict[str, np.ndarray], i: int, prices: dict[str, float]) -> float:
    """Slot-load time of a curve's loads at index ``i``."""
    return priced(((name, int(counts[i])) for name, counts in loads.items()), prices)


def priced(loads: Iterable[tuple[str, int]], prices: dict[str, float]) -> float:
    """Slot-load time of (adapter, loads) pairs, each adapter at its own price."""
    return sum(count * prices.get(name, prices[""]) for name, count in loads)
