"""A recording taken on the real server, replayed at the server's own settings, gives back
exactly what the server counted: slot loads, evictions and gpu hits, per adapter."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from lora_telemetry.capacity.analysis import analyse
from lora_telemetry.capacity.planner import make_plan
from lora_telemetry.capacity.recording import BASE, Batch, Copy, Pool, Request
from lora_telemetry.capacity.simulator import PoolSimulator
from tests.conftest import access_log_when, lora_paths, metrics_when, post, recording_complete, running_server

pytestmark = pytest.mark.server
NAMES = ["qa", "sql", "chat", "code", "math", "legal", "med"]


def _mixed_traffic(server, names: list[str | None], seed: int) -> Counter:
    """Waves of concurrent requests over the adapters and the base model, of uneven lengths,
    so that batches mix adapters, requests join running batches and slots change hands."""
    rng, sent, lock = random.Random(seed), Counter(), threading.Lock()

    def one(name: str | None, tokens: int) -> None:
        status, body = post(server, "/generate", {"text": f"wave of {name}", "lora_path": name,
                                                  "sampling_params": {"max_new_tokens": tokens, "temperature": 0}})
        assert status == 200, body
        with lock:
            sent[name or "__base__"] += 1

    for _ in range(6):
        wave = [threading.Thread(target=one, args=(rng.choice(names), rng.randint(2, 24)))
                for _ in range(rng.randint(6, 14))]
        for thread in wave:
            thread.start()
            time.sleep(rng.random() * 0.05)
        for thread in wave:
            thread.join()
    return sent


def _run(bed, tmp, flags: list[str], churn) -> tuple[list, object, Counter]:
    log = tmp / "access.log"
    with running_server(bed, flags, env={"LORA_TELEMETRY_ACCESS_LOG": str(log)}, tmp=tmp) as server:
        sent = _mixed_traffic(server, [*NAMES[:4], None], seed=1)
        churn(server)
        sent += _mixed_traffic(server, [*NAMES, None], seed=2)
        finished = sum(sent.values())
        metrics = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", outcome="finished") == finished,
                               timeout=10)
        records = access_log_when(log, lambda records: recording_complete(records, metrics))
    return records, metrics, sent, log


@pytest.fixture(scope="module")
def lru(bed, tmp_path_factory):
    def pin_one(server) -> None:
        assert post(server, "/load_lora_adapter", {"lora_name": "legal", "pinned": True,
                                                  "lora_path": str(bed.adapters()["legal"])})[0] == 200

    flags = ["--max-loras-per-batch", "4", *lora_paths(bed, [n for n in NAMES if n != "legal"])]
    return _run(bed, tmp_path_factory.mktemp("replay_lru"), flags, pin_one)


@pytest.fixture(scope="module")
def fifo(bed, tmp_path_factory):
    def unload_and_reload(server) -> None:
        assert post(server, "/unload_lora_adapter", {"lora_name": "sql"})[0] == 200
        reload = {"lora_name": "sql", "lora_path": str(bed.adapters()["sql"])}
        assert post(server, "/load_lora_adapter", reload)[0] == 200

    flags = ["--max-loras-per-batch", "3", "--lora-eviction-policy", "fifo", *lora_paths(bed, NAMES)]
    return _run(bed, tmp_path_factory.mktemp("replay_fifo"), flags, unload_and_reload)


def _replayed(records) -> PoolSimulator:
    [pool] = [r for r in records if isinstance(r, Pool)]
    return PoolSimulator(pool.slots, pool.policy).replay(records)


@pytest.mark.parametrize("run", ["lru", "fifo"])
def test_replay_gives_the_servers_slot_loads_and_evictions_per_adapter(run, request):
    records, metrics, _, _ = request.getfixturevalue(run)
    replay = _replayed(records)
    def nonzero(counts: dict) -> dict:
        return {k: v for k, v in counts.items() if v}

    assert nonzero(replay.slot_loads) == nonzero(metrics.by("sglang_lora_pool_slot_loads_total", "lora_name"))
    assert nonzero(replay.evictions) == nonzero(metrics.by("sglang_lora_pool_evictions_total", "lora_name"))
    assert sum(replay.evictions.values()) >= 5  # the pool really was contended


@pytest.mark.parametrize("run", ["lru", "fifo"])
def test_replay_gives_the_servers_gpu_hits_and_misses_per_adapter(run, request):
    records, metrics, sent, _ = request.getfixturevalue(run)
    replay = _replayed(records)
    for result, replayed in (("hit", replay.hits), ("miss", replay.misses)):
        # The server shows an adapter's hit and miss series from its first lookup on, at 0 if need be.
        counted = metrics.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result=result)
        assert {k: v for k, v in replayed.items() if v} == {k: v for k, v in counted.items() if v}, result
    assert replay.hits + replay.misses == sent


@pytest.mark.parametrize("run", ["lru", "fifo"])
def test_the_recording_holds_every_request_and_mixed_batches(run, request):
    records, _, sent, _ = request.getfixturevalue(run)
    assert Counter(r.name for r in records if isinstance(r, Request)) == sent
    assert any(len(r.adapters) >= 3 for r in records if isinstance(r, Batch))


def test_the_pinned_adapter_is_recorded_pinned_and_never_evicted(lru):
    records, metrics, _, _ = lru
    assert any(getattr(r, "name", None) == "legal" and getattr(r, "pinned", False) for r in records)
    assert metrics.by("sglang_lora_pool_evictions_total", "lora_name").get("legal", 0) == 0


@pytest.mark.parametrize("run", ["lru", "fifo"])
def test_advise_states_the_servers_own_gpu_hit_rate_at_its_own_setting(run, request):
    records, metrics, _, log = request.getfixturevalue(run)
    analysis = analyse(log)
    [pool] = [r for r in records if isinstance(r, Pool)]
    hits = metrics.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result="hit")
    misses = metrics.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result="miss")
    adapters = set(hits) | set(misses) - {"__base__"}
    served = sum(hits.get(n, 0) for n in adapters if n != "__base__")
    asked = served + sum(misses.get(n, 0) for n in adapters if n != "__base__")
    assert analysis.slots.hit_rate(analysis.index(pool.slots)) == pytest.approx(served / asked)


@pytest.mark.parametrize("run", ["lru", "fifo"])
def test_advise_prices_the_servers_own_policy_at_the_slot_loads_and_seconds_it_measured(run, request):
    """The recorded policy's replay in ``advise --plan``: the server's slot loads and reloads, and
    their time as the access log's C records measured them, which are the server's own copies."""
    records, metrics, _, log = request.getfixturevalue(run)
    copies = [r for r in records if isinstance(r, Copy)]
    assert len(copies) == metrics.total("sglang_lora_pool_slot_loads_total")  # the base model's slot too
    assert sum(c.seconds for c in copies) == pytest.approx(
        metrics.total("sglang_lora_pool_slot_load_seconds_sum"), abs=1e-6 * len(copies))  # 6 decimals each
    recorded = make_plan(log, None).recorded
    loads = metrics.by("sglang_lora_pool_slot_loads_total", "lora_name")
    assert recorded.slot_loads == sum(n for name, n in loads.items() if name != BASE)
    assert recorded.reloads == metrics.total("sglang_lora_pool_slot_reloads_total")
    assert recorded.slot_load_s == pytest.approx(sum(c.seconds for c in copies if c.name != BASE))
    # advise's slot-count table and remedies price the recorded setting at the same seconds
    analysis = analyse(log)
    [pool] = [r for r in records if isinstance(r, Pool)]
    assert analysis.load_seconds(analysis.index(pool.slots)) == pytest.approx(recorded.slot_load_s)
