"""A real server with ``--enable-lora-overlap-loading`` (slots filled at admission) and SGLang's
warm-up request on: lookups at the first admission check, an access log that replays exactly,
one copy time per slot load, and the warm-up not counted as traffic."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from lora_telemetry.capacity.recording import Admission, Pool
from lora_telemetry.capacity.simulator import PoolSimulator
from tests.conftest import access_log_when, generate, lora_paths, metrics_when, running_server
from tests.pool_model import BASE, PoolModel

pytestmark = pytest.mark.server
ADAPTERS = ["qa", "sql", "chat", "code", "math"]
# Hits and misses, with the base model's slot taken once it is the only victim left.
SEQUENCE = ["qa", "sql", "qa", "chat", "code", "qa", "code", "math", "sql", "sql"]
BURST = ["chat", "qa", "math", "sql", "code", "chat", "math", "qa"]
TOKENS = 3


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overlap")
    flags = ["--max-loras-per-batch", "3", "--max-loaded-loras", "6", "--enable-lora-overlap-loading",
             *lora_paths(bed, ADAPTERS)]
    log = tmp / "access.log"
    with running_server(bed, flags, env={"LORA_TELEMETRY_ACCESS_LOG": str(log)}, probe=True, tmp=tmp,
                        warmup=True) as server:
        deadline = time.monotonic() + 120
        while "The server is fired up" not in server.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        server.access_log, server.tmp = log, tmp
        server.after_warmup = metrics_when(server, lambda m: m.total("sglang:num_requests_total") >= 1)
        yield server


def test_sglangs_warm_up_request_is_not_user_traffic(server):
    warm = server.after_warmup
    assert warm.total("sglang:num_requests_total") >= 1  # SGLang counted its warm-up generation
    assert warm.total("sglang_lora_requests_total") == 0
    assert warm.total("sglang_lora_requests_in_flight") == 0
    generate(server, None)
    after = metrics_when(server, lambda m: m.total("sglang_lora_requests_total") == 1)
    assert after.by("sglang_lora_requests_total", "lora_name") == {"__base__": 1}


def test_gpu_lookups_happen_at_the_first_admission_check(server):
    """Sequential requests, each alone: with overlap loading a slot is filled when a request is
    admitted and a forward batch never marks its adapters used, so the pool evicts in load order."""
    before = metrics_when(server, lambda m: True)
    model = PoolModel(slots=3, policy="fifo")
    model.request(BASE)  # the base model's request of the warm-up test above
    hits, misses = Counter(), Counter()
    for name in SEQUENCE:
        hit, _ = model.request(name)
        (hits if hit else misses)[name] += 1
        generate(server, name, tokens=TOKENS)

    def delta(m, result):
        now = m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result=result)
        was = before.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result=result)
        return {k: v - was.get(k, 0) for k, v in now.items() if v - was.get(k, 0)}

    m = metrics_when(server, lambda m: sum(delta(m, "hit").values()) + sum(delta(m, "miss").values())
                     == len(SEQUENCE))
    assert delta(m, "miss") == misses and delta(m, "hit") == hits
    loads = m.by("sglang_lora_pool_slot_loads_total", "lora_name")
    assert {k: v for k, v in loads.items() if k != BASE} == misses  # one copy per miss
    state = json.loads((server.tmp / "sglang-state.json").read_text())
    assert m.total("sglang_lora_pool_evictions_total") == state["eviction_count"]


def test_each_slot_load_gets_one_copy_time(server):
    m = metrics_when(server, lambda m: True)
    loads = m.total("sglang_lora_pool_slot_loads_total")
    assert loads >= 5 and m.total("sglang_lora_pool_slot_load_seconds_count") == loads


def test_the_replay_of_the_access_log_gives_back_every_count(server):
    """The pool prepares load sets at admission (the new adapter, the running batch's, those being
    copied), not forward batches: recorded as such, with each request's lookup at its first admission
    check, SGLang's rules replayed give back the measured slot loads, evictions, hits and misses,
    here after a burst of concurrent requests over more adapters than slots."""
    before = metrics_when(server, lambda m: True).total("sglang_lora_requests_total")
    with ThreadPoolExecutor(len(BURST)) as workers:
        list(workers.map(lambda name: generate(server, name, tokens=12), BURST))
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total") == before + len(BURST))
    lookups = sum(m.total("sglang_lora_cache_lookups_total", tier="gpu", result=r) for r in ("hit", "miss"))
    records = access_log_when(server.access_log, lambda rs: sum(isinstance(r, Admission) for r in rs) == lookups)
    [pool] = [r for r in records if isinstance(r, Pool)]
    replay = PoolSimulator(pool.slots, pool.policy).replay(records)
    assert sum(isinstance(r, Admission) for r in records) == lookups >= before + len(BURST)  # each once

    def measured(name, **labels):
        return {k: v for k, v in m.by(name, "lora_name", **labels).items() if v}

    assert measured("sglang_lora_pool_slot_loads_total") == _nonzero(replay.slot_loads)
    assert measured("sglang_lora_pool_evictions_total") == _nonzero(replay.evictions)
    assert measured("sglang_lora_cache_lookups_total", tier="gpu", result="hit") == _nonzero(replay.hits)
    assert measured("sglang_lora_cache_lookups_total", tier="gpu", result="miss") == _nonzero(replay.misses)
    assert sum(replay.evictions.values()) > len(set(BURST)) - 3  # the burst made the pool turn over


def _nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}
