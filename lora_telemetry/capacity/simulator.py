"""SGLang's adapter pool, replayed: what a recording would have cost at any slot count.

The rules are those of SGLang 0.5.23's ``LoRAMemoryPool.prepare_lora_batch`` and its
eviction policies (``sglang/srt/lora/mem_pool.py``, ``eviction_policy.py``):

- the base model takes a slot when the pool is made and is a victim only when every other
  resident adapter is needed by the batch at hand;
- each forward batch first marks all its adapters used, in its own order, then loads each
  missing one into a free slot or, when none is free, into the slot of a victim chosen among
  residents that the batch does not need and that are not pinned;
- LRU picks the least recently marked victim; FIFO the one marked first since it entered;
  with adapter priorities (:mod:`lora_telemetry.priorities`) the lowest priority goes first,
  LRU within a priority (requests' own priorities are not in a recording, so they lift nothing),
  and adapters still decoding go last: those the recording says the running batch held before
  the batch at hand (``D`` records; a recording without them protects none);
- a slot load in a batch that schedules no new request of that adapter copies back an adapter
  evicted under its running requests: a reload (SGLang's decode step makes it);
- an unloaded adapter leaves the pool and the policy's order at once;
- with ``--enable-lora-overlap-loading`` the pool prepares load sets at admission, not forward
  batches (the recording holds those), and a request's gpu lookup is its first admission check
  (an ``A`` record): a hit when its adapter holds a slot, marking nothing.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping

from lora_telemetry.capacity.recording import BASE, Admission, Batch, Decoding, Load, Record, Unload
from lora_telemetry.priorities import DEFAULT, pick_victim


class PoolFull(RuntimeError):
    """Every slot is held by an adapter the batch needs or by a pinned one (SGLang raises too)."""


class PoolSimulator:
    """One scheduler's pool. Counts per adapter: slot loads, evictions, and for requests first
    scheduled in a batch whether their adapter already held a slot (gpu hit) or not."""

    def __init__(self, slots: int, policy: str = "lru", priorities: Mapping[str, int] | None = None) -> None:
        if slots < 1 or policy not in ("lru", "fifo", "priority"):
            raise ValueError(f"a pool needs at least one slot and policy lru, fifo or priority, not {slots}, "
                             f"{policy!r}")
        if policy == "priority":
            priorities = priorities or {}
        self.priorities = priorities  # None: SGLang's own policy; else ours, which is LRU within a priority
        self.slots, self.lru = slots, policy == "lru" or priorities is not None
        self.resident: set[str] = set()
        self.order: OrderedDict[str, None] = OrderedDict()  # the policy's order; never the base model
        self.pinned: set[str] = set()
        self.slot_loads: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()  # of the slot loads, those for running requests
        self.running: set[str] = set()  # adapters with unfinished requests in the running batch (D records)
        self.overlap = False  # admission records seen: loads are made at admission, never reloads
        self.evictions: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self.batches = 0
        self._last: tuple[str, ...] = ()  # the batch before, while no load or unload came between

    def load(self, name: str, pinned: bool) -> None:
        self._last = ()
        (self.pinned.add if pinned else self.pinned.discard)(name)

    def unload(self, name: str) -> None:
        self._last = ()
        self.resident.discard(name)
        self.order.pop(name, None)
        self.pinned.discard(name)

    def decoding(self, names: tuple[str, ...]) -> None:
        """The running batch's adapters before the next (prefill) batch: a priority pool keeps them."""
        self.running = set(names)

    def admitted(self, name: str) -> None:
        """A request's gpu lookup at its first admission check (overlap loading)."""
        self.overlap = True
        (self.hits if name in self.resident else self.misses)[name] += 1

    def batch(self, adapters: tuple[str, ...], new_requests: tuple[int, ...]) -> None:
        self.batches += 1
        if adapters == self._last:  # a decode step: all resident, and marking again changes no order
            for name, count in zip(adapters, new_requests, strict=True):
                if count:
                    self.hits[name] += count
            return
        self._last = adapters
        for name, count in zip(adapters, new_requests, strict=True):
            if count:
                (self.hits if name in self.resident else self.misses)[name] += count
        for name in adapters:
            self._mark(name)
        needed = set(adapters)
        for name, count in zip(adapters, new_requests, strict=True):
            if name not in self.resident:
                if len(self.resident) >= self.slots:
                    self._evict(needed)
                self.resident.add(name)
                self.slot_loads[name] += 1
                if not count and not self.overlap and name != BASE:
                    self.reloads[name] += 1

    def _mark(self, name: str) -> None:
        if name == BASE:
            return
        if self.lru:
            self.order.pop(name, None)
            self.order[name] = None
        elif name not in self.order:
            self.order[name] = None

    def _evict(self, needed: set[str]) -> None:
        candidates = {r for r in self.resident if r not in needed and r not in self.pinned}
        if not candidates:
            raise PoolFull(f"no slot free for a batch of {len(needed)} adapters in a pool of {self.slots}")
        adapters = candidates - {BASE}
        if self.priorities is not None:
            priorities = self.priorities
            idle = adapters - self.running
            if not idle and BASE in candidates:
                victim = BASE  # as the policy: the base model before an adapter still decoding
            else:
                victim = pick_victim(self.order, idle or adapters, lambda name: priorities.get(name, DEFAULT))
        else:
            victim = next((name for name in self.order if name in adapters), None) if adapters else BASE
        if victim is None:
            raise PoolFull("a resident adapter is missing from the policy's order")
        self.resident.discard(victim)
        self.order.pop(victim, None)
        self.evictions[victim] += 1

    def replay(self, records: Iterable[Record]) -> PoolSimulator:
        """Apply loads, unloads and batches in order (other records are ignored)."""
        for record in records:
            if isinstance(record, Batch):
                self.batch(record.adapters, record.new_requests)
            elif isinstance(record, Admission):
                self.admitted(record.name)
            elif isinstance(record, Decoding):
                self.decoding(record.names)
            elif isinstance(record, Load):
                self.load(record.name, record.pinned)
            elif isinstance(record, Unload):
                self.unload(record.name)
        return self
