"""Adapter priorities: which adapter leaves a full gpu pool first.

SGLang evicts the least recently used adapter whatever it is worth. With priorities, the
lowest priority goes first and LRU decides within a priority; a request that waits with its
own ``priority`` (SGLang's request field) lifts its adapter to at least that value while it
waits. An adapter whose requests are still decoding in the running batch goes only when no
other candidate is left: SGLang's pool protects only the batch being prepared, and a prefill
batch that took a decoding adapter's slot by priority made the next decode step copy it back
(on an H100, 29 extra slot loads of 26 ms in 40 s). LRU protects such adapters by recency.
Priorities are integers, larger is kept longer; an adapter without one has :data:`DEFAULT`.
The same rule drives SGLang's pool (:class:`PriorityEvictionPolicy`, handed to SGLang by
:mod:`lora_telemetry.hooks.eviction`) and the simulator that predicts it, which replays
batches and so does not know which adapters are still decoding.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lora_telemetry.adapters import name_problem

DEFAULT = 0
LIMIT = 10**9  # priorities are at most this far from 0: room to order, no overflow anywhere


class PriorityError(ValueError):
    """A priorities mapping we cannot use; names the adapter and the problem."""


def check_priorities(priorities: Mapping[Any, Any], source: str = "priorities") -> dict[str, int]:
    """``{adapter name: int}``, every name a valid adapter name and every value in range."""
    if not isinstance(priorities, Mapping):
        raise PriorityError(f"{source}: expected a mapping of adapter names to integers, "
                            f"got {type(priorities).__name__}")
    checked: dict[str, int] = {}
    for name, value in priorities.items():
        problem = name_problem(name)
        if problem:
            raise PriorityError(f"{source}: adapter {name!r}: {problem}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise PriorityError(f"{source}: adapter {name!r}: priority {value!r} is not an integer")
        if not -LIMIT <= value <= LIMIT:
            raise PriorityError(f"{source}: adapter {name!r}: priority {value} is outside -{LIMIT:,} to {LIMIT:,}")
        checked[name] = value
    return checked


def pick_victim(order: Iterable[Any], candidates: set, standing: Callable[[Any], int]) -> Any:
    """The candidate of lowest standing, the least recently used among equals; ``order`` runs
    from least to most recently used (a candidate missing from it counts as older than all, in
    sorted order, so that every rank agrees). The base model (None) only when it is the sole
    candidate; never raises, because SGLang's pool would fail the batch."""
    adapters = candidates - {None}
    if not adapters:
        return None
    tracked = [key for key in order if key in adapters]
    untracked = sorted(adapters.difference(tracked), key=str)
    return min(untracked + tracked, key=lambda key: standing(key))  # min keeps the first of equals


class PriorityEvictionPolicy:
    """SGLang's ``EvictionPolicy`` interface (``mark_used``, ``select_victim``, ``remove``) by priority.

    Keys are SGLang's adapter ids. ``name_of(uid)`` gives an adapter's name (None if unknown) and
    ``lifted()`` the highest priority among each adapter's waiting requests, by id, and ``running()``
    the ids of adapters with unfinished requests in the running batch; all are given by
    :mod:`lora_telemetry.hooks.eviction` once SGLang's scheduler exists. Every rank of a
    replica makes the same choice from the same state.
    """

    def __init__(self, priorities: Mapping[str, int]) -> None:
        self.priorities = dict(priorities)
        self.access_order: OrderedDict[str, None] = OrderedDict()
        self.name_of: Callable[[str], str | None] = lambda _uid: None
        self.lifted: Callable[[], Mapping[str, int]] = dict
        self.running: Callable[[], set] = set
        self.eviction_count = 0

    def mark_used(self, uid: str | None) -> None:
        if uid is not None:
            self.access_order.pop(uid, None)
            self.access_order[uid] = None

    def remove(self, uid: str | None) -> None:
        if uid is not None:
            self.access_order.pop(uid, None)

    def select_victim(self, candidates: set) -> str | None:
        try:
            lifted, running = self.lifted(), self.running()
        except Exception:  # a scheduler we cannot read: the adapters' own priorities still hold
            lifted, running = {}, set()

        def standing(uid: str) -> int:
            own = self.priorities.get(self.name_of(uid), DEFAULT)
            return max(own, lifted.get(uid, own))

        idle = candidates - running
        victim = pick_victim(self.access_order, idle if idle else candidates, standing)
        self.eviction_count += 1
        return victim
