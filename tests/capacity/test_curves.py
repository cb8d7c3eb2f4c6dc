"""The one-pass LRU curve against SGLang's rules replayed size by size, on random recordings."""

from __future__ import annotations

import random

import pytest

from lora_telemetry.capacity.curves import exact_curve, host_curve, lru_curve
from lora_telemetry.capacity.recording import BASE, Admission, Batch, Request
from lora_telemetry.capacity.simulator import PoolSimulator


def _recording(seed: int, adapters: int, batches: int, widest: int, admissions: bool = False) -> list[Batch]:
    """``admissions``: lookups at admission checks between batches, as overlap loading records them."""
    rng = random.Random(seed)
    names = [f"a{i}" for i in range(adapters)]
    weights = [1 / (i + 1) for i in range(adapters)]
    out, last = [Batch(0.0, 0, (BASE,), (0,))], None  # SGLang puts the base model in when it makes the pool
    for t in range(batches):
        if admissions and rng.random() < 0.3:
            out.append(Admission(float(t), 0, rng.choices(names, weights)[0]))
        if last is not None and rng.random() < 0.5:  # decode steps repeat the batch
            out.append(Batch(float(t), 0, last.adapters, (0,) * len(last.adapters)))
            continue
        chosen = set(rng.choices(names, weights, k=rng.randint(1, widest)))
        if rng.random() < 0.3:
            chosen.add(BASE)
        adapters = tuple(sorted(chosen, key=lambda n: (n != BASE, rng.random())))
        last = Batch(float(t), 0, adapters, tuple(rng.randint(0, 3) for _ in adapters))
        out.append(last)
    return out


@pytest.mark.parametrize("seed,admissions", [(seed, seed % 2 == 1) for seed in range(6)])
def test_one_pass_equals_replaying_each_size(seed, admissions):
    widest = 3
    records = _recording(seed, adapters=12, batches=3000, widest=widest, admissions=admissions)
    sizes = list(range(widest + 1, 14))  # every batch fits beside the base model's slot
    fast, exact = lru_curve(records, sizes), exact_curve(records, "lru", sizes)
    assert fast.sizes == exact.sizes == sizes
    assert fast.requests == exact.requests
    for name in exact.requests:
        assert list(fast.hits[name]) == list(exact.hits[name]), name
        assert list(fast.loads[name]) == list(exact.loads[name]), name


def test_a_pool_with_room_for_everything_misses_each_adapter_once():
    records = _recording(1, adapters=5, batches=500, widest=2)
    curve = lru_curve(records)
    assert curve.sizes[-1] == 6
    assert all(curve.loads[name][-1] == 1 for name in curve.requests)
    assert curve.hit_rate(0) < curve.hit_rate(len(curve.sizes) - 1)
    rates = [curve.hit_rate(i) for i in range(len(curve.sizes))]
    assert rates == sorted(rates)


def test_fifo_replay_follows_insertion_order_not_use():
    pool = PoolSimulator(3, "fifo")
    for adapters in [(BASE,), ("a",), ("b",), ("a",), ("c",)]:
        pool.batch(adapters, (1,) * len(adapters))
    assert pool.evictions == {"a": 1}  # a came in first; using it again does not save it under FIFO
    lru = PoolSimulator(3, "lru")
    for adapters in [(BASE,), ("a",), ("b",), ("a",), ("c",)]:
        lru.batch(adapters, (1,) * len(adapters))
    assert lru.evictions == {"b": 1}


def test_a_lookup_at_admission_counts_a_hit_or_miss_and_moves_nothing():
    """Overlap loading looks an adapter up at admission; only the pool's load sets mark it used."""
    pool = PoolSimulator(3, "lru").replay([Batch(0.0, 0, (BASE,), (0,)), Batch(1.0, 0, ("a",), (0,)),
                                           Batch(2.0, 0, ("b",), (0,)), Admission(3.0, 0, "a"),
                                           Admission(4.0, 0, "c"), Batch(5.0, 0, ("c",), (0,))])
    assert (pool.hits, pool.misses) == ({"a": 1}, {"c": 1})
    assert pool.evictions == {"a": 1}  # looked up, not used: still the least recently used


def test_the_base_model_goes_only_when_the_batch_needs_every_other_slot():
    pool = PoolSimulator(3, "lru")
    pool.batch((BASE,), (0,))
    pool.batch(("a", "b"), (1, 1))
    assert pool.resident == {BASE, "a", "b"}
    pool.batch(("a", "c"), (1, 1))  # b is the only adapter the batch does not need
    assert pool.evictions == {"b": 1}
    pool.batch(("a", "b", "c"), (0, 1, 0))  # all three needed: the base model is the victim
    assert pool.evictions == {"b": 1, BASE: 1} and BASE not in pool.resident


def test_pinned_adapters_are_never_victims():
    pool = PoolSimulator(3, "lru")
    pool.load("p", pinned=True)
    for adapters in [(BASE,), ("p",), ("a",), ("b",), ("c",)]:
        pool.batch(adapters, (1,))
    assert "p" in pool.resident and pool.evictions["p"] == 0


def test_host_curve_counts_reloads_per_capacity():
    names = ["a", "b", "a", "c", "a", "b"]
    curve = host_curve([Request(float(i), n, 3, 4) for i, n in enumerate(names)])
    assert curve.sizes == [1, 2, 3]
    # capacity 1: every change of adapter reloads; 2: b at the end was pushed out by c; 3: first uses only
    assert [int(sum(curve.loads[n][i] for n in curve.loads)) for i in range(3)] == [6, 4, 3]
