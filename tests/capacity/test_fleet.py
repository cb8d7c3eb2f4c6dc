"""Fleet advice: routing policies do what they say, the one-pass curves agree with a pool replayed
request by request, the recorded routing gives each replica's own replay, and the command reads."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from lora_telemetry.capacity.fleet import HashRing, Routed, advise_fleet, request_curve, route
from lora_telemetry.capacity.recording import BASE, VERSION_LINE, Batch, Pool, Request, format_record
from lora_telemetry.capacity.simulator import PoolSimulator


def _requests(count: int, adapters: int, seed: int = 0, replicas: int = 2, base_share: float = 0.1) -> list[Routed]:
    rng = random.Random(seed)
    names = [f"a{i:02d}" for i in range(adapters)]
    weights = [1 / (i + 1) ** 0.6 for i in range(adapters)]
    return [Routed(i * 0.01, BASE if rng.random() < base_share else rng.choices(names, weights)[0],
                   rng.randrange(replicas)) for i in range(count)]


def test_round_robin_and_random_spread_requests_evenly():
    requests = _requests(4000, 10)
    assert route(requests, "round-robin", 3)[:7] == [0, 1, 2, 0, 1, 2, 0]
    spread = Counter(route(requests, "random", 4, seed=3))
    assert set(spread) == {0, 1, 2, 3} and max(spread.values()) < 1.15 * 1000
    assert route(requests, "random", 4, seed=3) == route(requests, "random", 4, seed=3)
    assert route(requests, "recorded", 2) == [r.replica for r in requests]


def test_a_new_replica_takes_adapters_only_for_itself():
    names = [f"adapter-{i}" for i in range(300)]
    three, four = HashRing(3), HashRing(4)
    moved = [n for n in names if three.home(n) != four.home(n)]
    assert moved and all(four.home(n) == 3 for n in moved)
    assert 0.15 < len(moved) / len(names) < 0.35  # about a quarter


def test_adapter_affine_keeps_adapters_home_until_the_home_is_busy():
    ring = HashRing(2)
    # Even traffic over many adapters: nobody is busy, every adapter stays at home.
    even = [Routed(i, f"a{i % 40:02d}", 0) for i in range(400)]
    placed = route(even, "adapter-affine", 2, window=32, spill=2.0)
    away = sum(p != ring.home(r.name) for r, p in zip(even, placed, strict=True))
    assert away < 0.1 * len(even)
    # One adapter takes all the traffic: its home holds at most its bounded share of any window.
    hot = [Routed(i, "a00", 0) for i in range(200)]
    placed = route(hot, "adapter-affine", 2, window=32, spill=1.25)
    assert set(placed) == {0, 1}
    for end in range(32, len(placed)):
        assert placed[end - 31:end + 1].count(ring.home("a00")) <= 20  # ceil(1.25 * 32 / 2)


def test_base_model_requests_go_to_the_least_loaded_replica():
    requests = [Routed(0, "a01", 0)] * 6 + [Routed(1, BASE, 0)]
    placed = route(requests, "adapter-affine", 2, spill=10)
    home = HashRing(2).home("a01")
    assert placed[:6] == [home] * 6 and placed[6] == 1 - home


@pytest.mark.parametrize("policy", ["round-robin", "random", "adapter-affine", "recorded"])
def test_the_one_pass_curve_agrees_with_pools_replayed_request_by_request(policy):
    requests = _requests(1500, 12, seed=5)
    placement = route(requests, policy, 2, seed=1)
    sizes = [2, 3, 5, 8, 13]
    curve = request_curve(requests, placement, 2, sizes)
    for i, slots in enumerate(sizes):
        hits = 0
        for replica in (0, 1):
            pool = PoolSimulator(slots)
            pool.batch((BASE,), (0,))
            for request, where in zip(requests, placement, strict=True):
                if where == replica:
                    pool.batch((request.name,), (1,))
            hits += sum(n for name, n in pool.hits.items() if name != BASE)
        assert sum(int(curve.hits[n][i]) for n in curve.hits) == hits, (policy, slots)


def test_adapter_affine_needs_fewer_slots_than_spreading_when_adapters_outnumber_slots():
    requests = _requests(6000, 24, seed=2, base_share=0)
    sizes = [6, 8, 10]
    rates = {}
    for policy in ("round-robin", "adapter-affine"):
        curve = request_curve(requests, route(requests, policy, 2), 2, sizes)
        rates[policy] = [curve.hit_rate(i) for i in range(len(sizes))]
    assert all(a > r + 0.05 for a, r in zip(rates["adapter-affine"], rates["round-robin"], strict=True)), rates


def _replica_log(path, requests: list[Routed], replica: int, slots: int) -> None:
    """An access log a replica could have written: one batch per request it served."""
    mine = [r for r in requests if r.replica == replica]
    lines = [VERSION_LINE, format_record(Pool(0.0, 0, slots, "lru", 1024)), format_record(Batch(0.0, 0, (BASE,), (0,)))]
    for r in mine:
        lines.append(format_record(Batch(r.arrival, 0, (r.name,), (1,))))
        lines.append(format_record(Request(r.arrival, r.name, 5, 5)))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fleet_logs(tmp_path):
    requests = _requests(800, 10, seed=9)
    paths = [tmp_path / "replica-0.log", tmp_path / "replica-1.log"]
    for replica, path in enumerate(paths):
        _replica_log(path, requests, replica, slots=4)
    return requests, paths


def test_the_recorded_routing_replays_each_replica_as_it_ran(fleet_logs):
    requests, paths = fleet_logs
    advice = advise_fleet(paths, counts=[1, 2])
    for replica in (0, 1):
        pool = PoolSimulator(4)
        pool.batch((BASE,), (0,))
        for r in requests:
            if r.replica == replica:
                pool.batch((r.name,), (1,))
        asked = sum(n for name, n in (pool.hits + pool.misses).items() if name != BASE)
        assert advice.replicas[replica].recorded() == (sum(n for k, n in pool.hits.items() if k != BASE), asked)
    assert advice.requests == len(requests)
    assert ("recorded", 2) in advice.curves and ("recorded", 1) not in advice.curves
    # Batches of one request each: the request model of the recorded routing is the replay itself.
    hits = sum(r.recorded()[0] for r in advice.replicas)
    asked = sum(r.recorded()[1] for r in advice.replicas)
    assert advice.hit_rate("recorded", 2, 4) == pytest.approx(hits / asked)
    assert advice.hit_rate("round-robin", 1, 4) == advice.hit_rate("adapter-affine", 1, 4)


def test_cheapest_is_the_fewest_slots_in_all_with_at_least_the_recorded_replicas(fleet_logs):
    advice = advise_fleet(fleet_logs[1], counts=[1, 2, 3, 4])
    for policy in ("round-robin", "adapter-affine"):
        target = advice.hit_rate(policy, 2, 6)
        n, slots = advice.cheapest(policy, target)
        assert n >= 2 and advice.hit_rate(policy, n, slots) >= target
        cheaper = [(m, s) for m in (2, 3, 4) for s in advice.sizes if (m * s, m) < (n * slots, n)]
        assert all(advice.hit_rate(policy, m, s) < target for m, s in cheaper), policy
        assert advice.fewest_slots(policy, n, target) == slots
    assert advice.cheapest("round-robin", 1.0) is None  # first uses always miss


def _advise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", *args],
                          capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})


def test_advise_with_two_logs_prints_the_fleet_tables_and_writes_figures(fleet_logs, tmp_path):
    figures = tmp_path / "fleet.json"
    png = tmp_path / "fleet.png"
    result = _advise(*map(str, fleet_logs[1]), "--replicas", "1,2,3", "--target", "0.5", "--json", str(figures),
                     "--chart", str(png))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Recorded routing" in out and "3 replicas: gpu hit rate by routing" in out and "any routing" in out
    assert "Cheapest fleet reaching a gpu hit rate of 50%" in out and "adapter-affine:" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    data = json.loads(figures.read_text())
    assert data["replicas"] == [1, 2, 3] and len(data["recorded"]) == 2
    assert data["cheapest"]["round-robin"] is not None


def test_advise_refuses_bad_fleet_input_in_one_line(fleet_logs, tmp_path):
    paths = list(map(str, fleet_logs[1]))
    bad = _advise(*paths, "--replicas", "2,x")
    assert bad.returncode == 2 and "--replicas takes replica counts" in bad.stdout
    assert _advise(*paths, "--plan", str(tmp_path / "p.json")).returncode == 2
    only_batches = tmp_path / "batches.log"
    only_batches.write_text(VERSION_LINE + "\n" + format_record(Batch(0.0, 0, ("a01",), (1,))) + "\n")
    missing = _advise(paths[0], str(only_batches))
    assert missing.returncode == 1 and "no finished requests recorded" in missing.stdout
    assert "Traceback" not in bad.stderr + missing.stderr
