"""Which adapters get series of their own in the costly families: the K busiest, with hysteresis.

Latency histograms cost dozens of series per adapter (the TTFT phases alone 88); at thousands
of adapters they would be most of ``/metrics``. So those families, and a few per-adapter
counters and gauges that only matter for the adapters that carry the traffic, keep a series per
adapter for at most K adapters; every other adapter's observations go to ``__other__``, so a sum
over ``lora_name`` still counts everything.

Until K adapters have been seen, every adapter gets in on its first request (a deployment of
fewer adapters than K sees no difference). After that, once a period the requests of each
adapter are added into a score that halves each period, and an outsider replaces the member with
the lowest score only when its own score is more than ``MARGIN`` times that: an adapter near the
boundary does not flap in and out from one scrape to the next. A member that is replaced loses
its series (Prometheus marks them stale; its later observations count under ``__other__``).

The tokenizer process leads: it counts finished requests and ranks. Scheduler processes follow:
they let adapters in on their own only while they know fewer than K (so a small deployment's
first requests get their series at once), and otherwise take the leader's set, which the runtime
hands them through the run's state directory within a publishing interval.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

from lora_telemetry import events as ev

PERIOD_S = 30.0
MARGIN = 2.0
DECAY = 0.5
_PASS = {ev.OTHER, ev.UNKNOWN}


class BusiestAdapters:
    """Members: the adapters whose top-K series exist. :meth:`label` is on the hot path: a set lookup."""

    def __init__(self, k: int, clock: Callable[[], float] = time.monotonic, period_s: float = PERIOD_S,
                 leader: bool = True) -> None:
        self.k, self.clock, self.period_s, self.leader = k, clock, period_s, leader
        self.members: set[str] = set()
        self.version = 0  # changes whenever the members do (the leader's set is shared when it does)
        self.requests: Counter[str] = Counter()  # this period's
        self.scores: dict[str, float] = {}
        self._next = clock() + period_s

    def label(self, name: str) -> str:
        """``name`` for a member (joining while there is room), else ``__other__``."""
        if name in self.members or name in _PASS:
            return name
        if len(self.members) < self.k:
            self.members.add(name)
            self.version += 1
            return name
        return ev.OTHER

    def follow(self, names: Iterable[str]) -> list[str]:
        """A follower takes the leader's set, and while the leader knows fewer than K keeps members
        of its own (the leader has not seen their requests finish yet) up to K. Returns the members
        it let go."""
        leader = set(names)
        keep = leader | set(sorted(self.members - leader)[:max(0, self.k - len(leader))])
        gone = sorted(self.members - keep)
        self.members = keep
        return gone

    def served(self, name: str) -> list[str]:
        """Count one request of ``name``; once a period re-rank (the leader). Returns the members replaced."""
        if not self.leader:
            return []
        self.requests[name] += 1
        if self.clock() < self._next:
            return []
        return self.rerank()

    def rerank(self) -> list[str]:
        self._next = self.clock() + self.period_s
        scores = {name: score * DECAY for name, score in self.scores.items() if score * DECAY >= 0.01}
        for name, count in self.requests.items():
            scores[name] = scores.get(name, 0.0) + count
        self.requests.clear()
        self.scores = scores
        if len(self.members) < self.k:
            return []
        outsiders = sorted((s, n) for n, s in scores.items() if n not in self.members and n not in _PASS)
        members = sorted((scores.get(n, 0.0), n) for n in self.members)
        replaced = []
        while outsiders and members and outsiders[-1][0] > MARGIN * members[0][0]:
            (_, newcomer), (_, leaving) = outsiders.pop(), members.pop(0)
            self.members.discard(leaving)
            self.members.add(newcomer)
            replaced.append(leaving)
        self.version += bool(replaced)
        return replaced
