"""Fleet advice: the requests several replicas served, replayed under other routings and sizes.

Each replica's access log holds the requests its tokenizer finished (R records) and the batches
its scheduler ran (B records). The recorded routing is replayed batch by batch, replica by
replica, exactly as ``advise`` replays one server: at each replica's own slot count it gives
back the gpu hits that replica counted.

Another routing moves requests to replicas whose batches were never run, so there each request
is its own batch, in arrival order (as ``advise`` treats a recording of requests only), and
every routing, the recorded one included, is scored that way so that they compare like with
like. Policies:

- ``recorded``: the replica each request went to (only for the recorded number of replicas);
- ``round-robin``: the i-th request, in arrival order, to replica i mod N;
- ``random``: uniform, seeded;
- ``adapter-affine``: each adapter has a home replica on a consistent-hash ring; when the home
  already holds its bounded share of the last ``window`` requests (``spill`` times a fair
  share, rounded up), the request goes to the replica holding the fewest of them. Base-model
  requests have no home and go to the least loaded replica.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lora_telemetry.capacity import curves
from lora_telemetry.capacity.analysis import Analysis, analyse, from_requests, merge, split_records
from lora_telemetry.capacity.recording import BASE, RecordingError, Request, read

POLICIES = ("recorded", "round-robin", "random", "adapter-affine")
VIRTUAL_NODES = 64  # points per replica on the hash ring: shares even out to a few percent


@dataclass(frozen=True)
class Routed:
    arrival: float
    name: str
    replica: int  # where it was served


class HashRing:
    """Consistent hashing: adding a replica moves only the adapters whose new home it is."""

    def __init__(self, replicas: int, virtual_nodes: int = VIRTUAL_NODES) -> None:
        points = sorted((_hash(f"replica-{r}#{v}"), r) for r in range(replicas) for v in range(virtual_nodes))
        self.keys = [key for key, _ in points]
        self.owners = [owner for _, owner in points]

    def home(self, name: str) -> int:
        return self.owners[bisect.bisect(self.keys, _hash(name)) % len(self.keys)]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def route(requests: Sequence[Routed], policy: str, replicas: int, seed: int = 0,
          spill: float = 1.25, window: int = 32) -> list[int]:
    """The replica of each request (in the order given, which is arrival order) under ``policy``."""
    if policy == "recorded":
        return [r.replica for r in requests]
    if policy == "round-robin":
        return [i % replicas for i in range(len(requests))]
    if policy == "random":
        rng = random.Random(seed)
        return [rng.randrange(replicas) for _ in requests]
    if policy == "adapter-affine":
        return _affine(requests, replicas, spill, window)
    raise ValueError(f"unknown routing policy {policy!r}; one of {', '.join(POLICIES)}")


def _affine(requests: Sequence[Routed], replicas: int, spill: float, window: int) -> list[int]:
    ring, recent, load, out = HashRing(replicas), deque(), [0] * replicas, []
    homes: dict[str, int] = {}
    for request in requests:
        if len(recent) == window:  # the window is the last ``window`` requests, this one included
            load[recent.popleft()] -= 1
        least = min(range(replicas), key=load.__getitem__)
        if request.name == BASE:
            chosen = least
        else:
            home = homes.get(request.name)
            if home is None:
                home = homes[request.name] = ring.home(request.name)
            bound = math.ceil(spill * (len(recent) + 1) / replicas)
            chosen = home if load[home] < bound else least
        out.append(chosen)
        recent.append(chosen)
        load[chosen] += 1
    return out


def request_curve(requests: Sequence[Routed], placement: Sequence[int], replicas: int,
                  sizes: list[int]) -> curves.Curve:
    """Gpu hits at every slot count when each replica runs its requests one batch each."""
    streams: list[list[Request]] = [[] for _ in range(replicas)]
    for request, replica in zip(requests, placement, strict=True):
        streams[replica].append(Request(request.arrival, request.name, 0, 0))
    parts = [curves.lru_curve(from_requests(stream), sizes) for stream in streams if stream]
    return merge(parts)


@dataclass
class Replica:
    path: Path
    analysis: Analysis  # its own batches, replayed exactly at its own slot count

    @property
    def slots(self) -> int | None:
        return self.analysis.pool.slots if self.analysis.pool else None

    def recorded(self) -> tuple[int, int]:
        """Gpu hits and requests at the replica's own slot count."""
        curve = self.analysis.slots
        i = self.analysis.index(self.slots) if self.slots else None
        if i is None:
            return 0, sum(curve.requests.values())
        return sum(int(curve.hits[n][i]) for n in curve.requests), sum(curve.requests.values())


@dataclass
class FleetAdvice:
    replicas: list[Replica]
    requests: int
    sizes: list[int]  # slots per replica
    counts: list[int]  # replica counts
    curves: dict[tuple[str, int], curves.Curve]  # (policy, replicas) -> over sizes

    def hit_rate(self, policy: str, replicas: int, slots: int) -> float | None:
        curve = self.curves.get((policy, replicas))
        return None if curve is None else curve.hit_rate(curve.sizes.index(slots))

    def fewest_slots(self, policy: str, replicas: int, target: float) -> int | None:
        """The fewest slots per replica reaching ``target`` with ``replicas`` (None if none does)."""
        for slots in self.sizes:
            rate = self.hit_rate(policy, replicas, slots)
            if rate is not None and rate >= target:
                return slots
        return None

    def cheapest(self, policy: str, target: float) -> tuple[int, int] | None:
        """The fewest slots in all, then the fewest replicas, reaching ``target`` with at least as many
        replicas as were recorded (fewer might not carry the traffic); None if nothing does."""
        reached = [(replicas, slots) for replicas in self.counts if replicas >= len(self.replicas)
                   if (slots := self.fewest_slots(policy, replicas, target)) is not None]
        return min(reached, key=lambda pair: (pair[0] * pair[1], pair[0]), default=None)


def read_fleet(paths: Sequence[Path]) -> tuple[list[Replica], list[Routed]]:
    """Each replica's exact replay, and every finished request tagged with its replica."""
    replicas, routed = [], []
    for index, path in enumerate(paths):
        requests = split_records(read(path)).requests
        if not requests:
            raise RecordingError(path, 1, 0, "no finished requests recorded (R lines): routing needs them")
        replicas.append(Replica(path, analyse(path)))
        routed += [Routed(r.arrival, r.name, index) for r in requests]
    routed.sort(key=lambda r: r.arrival)
    return replicas, routed


def advise_fleet(paths: Sequence[Path], counts: Sequence[int] | None = None, seed: int = 0,
                 spill: float = 1.25, window: int = 32,
                 progress: Callable[[str], None] = lambda _step: None) -> FleetAdvice:
    """Replay the fleet's requests under every policy for each replica count and slot count."""
    replicas, routed = read_fleet(paths)
    counts = sorted(set(counts or range(1, max(4, len(paths)) + 1)))
    distinct = {r.name for r in routed} - {BASE}
    sizes = curves.slot_sizes(len(distinct))
    table = {}
    for policy in POLICIES:
        for n in counts:
            if policy == "recorded" and n != len(paths):
                continue
            progress(f"{policy}, {n} replicas")
            placement = route(routed, policy, n, seed, spill, window)
            table[policy, n] = request_curve(routed, placement, n, sizes)
    return FleetAdvice(replicas, len(routed), sizes, counts, table)
