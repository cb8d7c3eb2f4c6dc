"""Real ``--tp 2`` and ``--pp-size 2`` servers: counts made once per replica, memory summed over
the ranks that hold it.

Every TP and PP rank keeps a full host copy of each adapter and its own pool: a TP rank its
share of every slot, a PP rank every layer's. A memory series summed over its labels must give
what the server holds; requests, lookups and slot loads happen once, whatever the ranks.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from lora_telemetry.scrape import Metrics
from tests.adapter_sizes import host_bytes, pool_capacity
from tests.conftest import generate, lora_paths, metrics_when, running_server
from tests.pool_model import BASE, PoolModel

pytestmark = pytest.mark.server
RANKS, SLOTS = 2, 3
SEQUENCE = ["qa", "sql", "qa", "chat", "sql", "chat"]


@pytest.fixture(scope="module", params=["--tp", "--pp-size"])
def server(request, bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    flags = [request.param, str(RANKS), "--max-loras-per-batch", str(SLOTS), *lora_paths(bed, ["qa", "sql", "chat"])]
    with running_server(bed, flags, env={"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}, tmp=tmp) as server:
        server.layout = request.param
        yield server


def test_requests_lookups_and_slot_loads_are_counted_once(server):
    model, hits, misses, evictions = PoolModel(slots=SLOTS), Counter(), Counter(), Counter()
    for name in SEQUENCE:
        hit, victim = model.request(name)
        (hits if hit else misses)[name] += 1
        evictions[victim] += victim is not None
        generate(server, name)
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total") == len(SEQUENCE))
    assert m.by("sglang_lora_requests_total", "lora_name") == Counter(SEQUENCE)
    gpu = {result: {k: v for k, v in m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu",
                                            result=result).items() if v} for result in ("hit", "miss")}
    assert gpu == {"hit": hits, "miss": misses}
    assert m.by("sglang_lora_pool_slot_loads_total", "lora_name") == {BASE: 1, **misses}
    assert {k: v for k, v in m.by("sglang_lora_pool_evictions_total", "lora_name").items() if v} == \
        {k: v for k, v in evictions.items() if k}
    assert m.by("sglang_lora_adapter_loads_total", "lora_name") == {"qa": 1, "sql": 1, "chat": 1}
    assert m.total("sglang_lora_adapters_loaded") == 3
    assert m.total("sglang_lora_pool_slots", state="used") == SLOTS
    assert {s.labels["dp_rank"] for s in m.select("sglang_lora_pool_slot_loads_total")} == {"0"}


def test_memory_sums_to_what_every_rank_holds(server, bed):
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_resident", tier="gpu", lora_name="chat") == 1)
    for name in ("qa", "sql", "chat"):
        expected = RANKS * host_bytes(bed.adapters()[name], bed.model)  # a full host copy on each rank
        assert m.total("sglang_lora_adapter_memory_bytes", lora_name=name, tier="host") == expected, name
        assert m.total("sglang_lora_adapter_resident", lora_name=name, tier="host") == 1, name
    if server.layout == "--tp":
        capacity = pool_capacity(bed.model, SLOTS, max_rank=8, tp=RANKS)  # each rank its share of a slot
    else:
        capacity = RANKS * pool_capacity(bed.model, SLOTS, max_rank=8)  # each stage every layer's buffers
    assert m.total("sglang_lora_pool_capacity_bytes") == capacity
    assert m.total("sglang_lora_adapter_memory_bytes", lora_name="chat", tier="gpu") == capacity // SLOTS


def test_the_running_gauge_counts_the_requests_of_every_micro_batch(server):
    """With ``--pp-size`` SGLang runs micro-batches in turn, each with its own running requests: four
    long requests started apart land in both, and every scrape while all four decode reads 4."""
    names = ["qa", "sql", "qa", "chat"]
    threads = [threading.Thread(target=generate, args=(server, name), kwargs={"tokens": 480}) for name in names]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    reads = []
    while any(t.is_alive() for t in threads):
        reads.append(Metrics.fetch(server.url).total("sglang_lora_requests_running"))
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    streak = longest = 0
    for value in reads:
        streak = streak + 1 if value == len(names) else 0
        longest = max(longest, streak)
    assert longest >= 5, reads  # half a second of scrapes: never one micro-batch's share
