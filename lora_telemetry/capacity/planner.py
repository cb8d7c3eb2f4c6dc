"""A pin plan for a slot budget, chosen by replaying the recording under each candidate.

Candidates rank adapters by requests (hottest first) and try: SGLang's own LRU; the k hottest
pinned (k < slots, SGLang keeps one slot unpinned); the h hottest given priority 1 over the
rest; and the k hottest pinned with the next h at priority 1. Each candidate replays every
scheduler's recorded batches through :class:`PoolSimulator` with its pins and priorities; a
batch with more unpinned adapters than the unpinned slots is split, as SGLang's admission
would. Splits cost what a hit rate does not show (requests wait for a later batch), so a
candidate that splits more than :data:`MAX_SPLIT_SHARE` of the batches is shown, not chosen.

What a plan is for is time: every slot load stops a batch while an adapter is copied in (26-37 ms
for 80 MiB on an H100), and a plan can raise the hit rate while adding loads that no lookup
counts (an adapter evicted under its running requests is copied back for the next decode step).
So candidates are priced by their slot loads, reloads included, times the seconds per load the
recording measured (its ``C`` records, per adapter size), and the cheapest wins; a plan that
does not cost less than the recorded policy is not recommended. A recording without timed
loads is priced by the number of slot loads.

One moment of timing can move a hit rate by ten points: the base model holds a slot until a
batch needs every slot the pins leave (an opening), and from then on adapters have one slot
more. With many openings in the recording any run of the same traffic has one early; with a few,
whether a run has one is luck (the same workload served twice had two openings, then none). So
each candidate is also replayed with the base model keeping its slot throughout (the openings
split) and with its slot free from the first adapter batch; with fewer than
:data:`SURE_OPENINGS` openings its rate is the range over the recording and both fates, else over
the recording and the freed fate. Among candidates of equal cost, the best low end wins,
then the best rate on the recording, then the fewest pins, then the fewest priorities.
Every adapter the recording saw is preloaded (or the ``preload`` hottest), which makes every
request after the first a host hit while they fit ``--max-loaded-loras``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from lora_telemetry.capacity import curves
from lora_telemetry.capacity.analysis import preloaded_at_start, split_records
from lora_telemetry.capacity.prices import load_prices, priced
from lora_telemetry.capacity.recording import (
    BASE,
    Admission,
    Batch,
    Decoding,
    Load,
    Pool,
    Record,
    RecordingError,
    Unload,
    read,
)
from lora_telemetry.capacity.simulator import PoolFull, PoolSimulator
from lora_telemetry.plan import Plan

MAX_SPLIT_SHARE = 0.01
SURE_OPENINGS = 5  # a re-run lacks all of them with a chance of about exp(-5), under 1%


@dataclass(frozen=True)
class Candidate:
    pin: tuple[str, ...]
    raised: tuple[str, ...]  # given priority 1 over the others' 0
    hits: int
    misses: int
    slot_loads: int = 0  # copies into a slot, reloads included (not the base model's)
    reloads: int = 0  # of them, for requests already running
    slot_load_s: float | None = None  # their predicted time; None where the recording timed no load
    split: float = 0.0  # share of the recorded batches that its pins split
    openings: int = 0  # times the recorded batches came to need every unpinned slot (evicting the base model)
    base_kept: float | None = None  # the hit rate had the base model kept its slot throughout
    base_freed: float | None = None  # and had its slot been free from the first adapter batch

    @property
    def hit_rate(self) -> float:
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 1.0

    @property
    def _rates(self) -> list[float]:
        fates = (self.base_freed,) if self.openings >= SURE_OPENINGS else (self.base_kept, self.base_freed)
        return [self.hit_rate, *(rate for rate in fates if rate is not None)]

    @property
    def low(self) -> float:
        """The lowest rate another run of the recorded traffic may well give."""
        return min(self._rates)

    @property
    def high(self) -> float:
        return max(self._rates)

    def describe(self) -> str:
        parts = [f"pin {', '.join(self.pin)}" if self.pin else "",
                 f"priority 1 for {', '.join(self.raised)}" if self.raised else ""]
        return "; ".join(p for p in parts if p) or "SGLang's LRU"

    @property
    def admissible(self) -> bool:
        return self.split <= MAX_SPLIT_SHARE

    @property
    def cost(self) -> float:
        """What the plan is chosen by: predicted seconds of slot loads, else their number."""
        return self.slot_load_s if self.slot_load_s is not None else float(self.slot_loads)


@dataclass
class Planned:
    plan: Plan
    chosen: Candidate
    recorded: Candidate  # SGLang's own policy on the recording: the recording's own rate
    considered: list[Candidate]
    host_now: float | None
    host_planned: float | None

    @property
    def helps(self) -> bool:
        """Whether the plan costs less slot-load time than the recorded policy (else it only preloads)."""
        return self.chosen is not self.recorded


def _split_batch(record: Batch, pinned: set[str], room: int) -> Iterable[Batch]:
    """``record`` as SGLang's admission would form it with ``room`` unpinned slots."""
    kept = [(n, c) for n, c in zip(record.adapters, record.new_requests, strict=True) if n in pinned]
    free = [(n, c) for n, c in zip(record.adapters, record.new_requests, strict=True) if n not in pinned]
    if len(free) <= room:
        yield record
        return
    for start in range(0, len(free), room):
        part = (kept if start == 0 else []) + free[start:start + room]
        yield Batch(record.time, record.dp, tuple(n for n, _ in part), tuple(c for _, c in part))


def _replay(pools: dict[int, list[Record]], slots: int, policy: str, pin: tuple[str, ...], raised: tuple[str, ...],
            recorded: dict[str, int] | None = None, base: str = "recorded",
            prices: dict[str, float] | None = None) -> Candidate | None:
    """``recorded``: the recorded pool's own priorities, when it ran with them. ``base``: "recorded",
    "kept" (batches that would take the base model's slot are split) or "freed" (its slot is free
    once the first batch without it comes). ``prices``: :func:`prices.load_prices`."""
    hits = misses = batches = split = openings = 0
    loads: Counter[str] = Counter()
    reloads = 0
    pinned = set(pin)
    priorities = dict.fromkeys(raised, 1) if raised else recorded
    kept = pinned | {BASE} if base == "kept" else pinned
    room = slots - len(kept)  # slots for the batch's other adapters
    if room < 1:
        return None  # no slot left for the others: SGLang would have to evict the base model
    for records in pools.values():
        pool = PoolSimulator(slots, policy, priorities)
        pool.pinned |= kept
        freed, opened = base != "freed", False
        repeat: tuple[str, ...] | None = None  # the batch before, whole, when nothing came between
        try:
            for record in records:
                if isinstance(record, Batch) and record.adapters == repeat and not any(record.new_requests):
                    batches += 1  # a decode step of the batch before: it changes nothing
                    continue
                if isinstance(record, Batch):
                    if not freed and BASE not in record.adapters and BASE in pool.resident:
                        pool.unload(BASE)  # as a batch needing every other slot would have evicted it
                        freed = True
                    free = sum(name not in kept for name in record.adapters)
                    parts = (record,) if free <= room else tuple(_split_batch(record, kept, room))
                    batches, split = batches + 1, split + (len(parts) > 1)
                    repeat = record.adapters if len(parts) == 1 else None
                    for batch in parts:
                        if len(parts) > 1:
                            free = sum(name not in kept for name in batch.adapters)
                        opening = free - (BASE in batch.adapters and BASE not in kept) >= room
                        openings, opened = openings + (opening and not opened), opening  # decode steps repeat it
                        pool.batch(batch.adapters, batch.new_requests)
                elif isinstance(record, Admission):
                    pool.admitted(record.name)
                elif isinstance(record, Decoding):
                    pool.decoding(record.names)
                elif isinstance(record, (Load, Unload)) and record.name in pinned:
                    continue  # preloaded pinned by the plan: neither loaded nor unloaded again
                elif isinstance(record, Load):
                    pool.load(record.name, record.pinned)
                    repeat = None
                elif isinstance(record, Unload):
                    pool.unload(record.name)
                    repeat = None
        except PoolFull:
            return None
        hits += sum(n for name, n in pool.hits.items() if name != BASE)
        misses += sum(n for name, n in pool.misses.items() if name != BASE)
        loads.update({name: n for name, n in pool.slot_loads.items() if name != BASE})
        reloads += sum(pool.reloads.values())
    seconds = priced(loads.items(), prices) if prices else None
    return Candidate(pin, raised, hits, misses, sum(loads.values()), reloads, seconds,
                     split / batches if batches else 0.0, openings)


def _scored(pools: dict[int, list[Record]], slots: int, policy: str, pin: tuple[str, ...],
            raised: tuple[str, ...], recorded: dict[str, int] | None = None,
            prices: dict[str, float] | None = None) -> Candidate | None:
    """The candidate on the recording, priced, with its rates under the base model's two fates beside."""
    found = _replay(pools, slots, policy, pin, raised, recorded, prices=prices)
    if found is None:
        return None
    fates = [_replay(pools, slots, policy, pin, raised, recorded, base) for base in ("kept", "freed")]
    kept, freed = (None if fate is None else fate.hit_rate for fate in fates)
    return replace(found, base_kept=kept, base_freed=freed)


def _ranked(pools: dict[int, list[Record]]) -> list[str]:
    asked: Counter[str] = Counter()
    for records in pools.values():
        for record in records:
            if isinstance(record, Batch):
                for name, count in zip(record.adapters, record.new_requests, strict=True):
                    if name != BASE:
                        asked[name] += count
            elif isinstance(record, Admission) and record.name != BASE:
                asked[record.name] += 1
    return [name for name, _ in sorted(asked.items(), key=lambda item: (-item[1], item[0]))]


def make_plan(path: Path, slots: int | None, preload: int | None = None,
              progress: Callable[[], None] = lambda: None) -> Planned:
    split = split_records(read(path))
    settings = next((r for part in split.pools.values() for r in part if isinstance(r, Pool)), None)
    slots = slots or (settings.slots if settings else None)
    if not slots or slots < 2:
        raise RecordingError(path, 1, 0, "no pool settings recorded: give --slots (at least 2)")
    policy = settings.policy if settings else "lru"
    pools = {dp: records for dp, records in split.pools.items() if any(isinstance(r, Batch) for r in records)}
    if not pools:
        raise RecordingError(path, 1, 0, "no batches recorded: a plan needs the server's access log")
    ranked, prices = _ranked(pools), load_prices(pools)
    own = settings.priorities if settings is not None and policy == "priority" else None
    recorded = _scored(pools, slots, policy, (), (), own, prices)
    considered = [c for c in [recorded] if c is not None]
    for k in range(0, min(slots - 1, len(ranked)) + 1):
        for h in range(0, min(slots - k, len(ranked) - k) + 1):
            if k == h == 0:
                continue
            found = _scored(pools, slots, "lru", tuple(ranked[:k]), tuple(ranked[k:k + h]), prices=prices)
            progress()
            if found is not None:
                considered.append(found)
    chosen = min((c for c in considered if c.admissible),
                 key=lambda c: (round(c.cost, 6), -round(c.low, 6), -round(c.hit_rate, 6), len(c.pin), len(c.raised)))
    if recorded is not None and chosen.cost >= recorded.cost:
        chosen = recorded  # nothing saves slot-load time: keep the policy that served
    preloaded = tuple(ranked[:preload] if preload is not None else ranked)
    host_now = host_planned = None
    if split.requests:
        budget = [max(len(preloaded), 1)]
        at_start = preloaded_at_start(split.loads, split.requests)
        host_now = curves.host_curve(split.requests, at_start, budget).hit_rate(0)
        host_planned = curves.host_curve(split.requests, preloaded, budget).hit_rate(0)
    predicted = {"gpu_hit_rate": chosen.hit_rate, "gpu_hit_rate_range": [chosen.low, chosen.high],
                 "recorded_gpu_hit_rate": recorded.hit_rate if recorded else None,
                 "slot_loads": chosen.slot_loads, "reloads": chosen.reloads, "slot_load_s": chosen.slot_load_s,
                 "recorded_slot_loads": recorded.slot_loads if recorded else None,
                 "recorded_slot_load_s": recorded.slot_load_s if recorded else None,
                 "host_hit_rate": host_planned, "recorded_host_hit_rate": host_now,
                 "recording": str(path), "requests_replayed": chosen.hits + chosen.misses}
    priorities = dict.fromkeys(chosen.raised, 1)
    if chosen is recorded and own:
        priorities = dict(own)  # the recorded pool's own, kept
    plan = Plan(slots, preloaded, chosen.pin, priorities, predicted)
    return Planned(plan, chosen, recorded or chosen, considered, host_now, host_planned)
