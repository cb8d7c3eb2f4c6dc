"""A real server with ``--enable-lora-overlap-loading`` (slots filled at admission) and SGLang's
warm-up request on: lookups at the first admission check, per-forward access-log batches,
one copy time per slot load, and the warm-up not counted as traffic."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from lora_telemetry.capacity.recording import Batch, read
from tests.conftest import generate, lora_paths, metrics_when, running_server
from tests.pool_model import BASE, PoolModel

pytestmark = pytest.mark.server
ADAPTERS = ["qa", "sql", "chat", "code", "math"]
# Hits and misses, with the base model's slot taken once it is the only victim left.
SEQUENCE = ["qa", "sql", "qa", "chat", "code", "qa", "code", "math", "sql", "sql"]
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


def test_access_log_records_forward_batches_not_load_sets(server):
    metrics_when(server, lambda m: True)
    time.sleep(0.5)  # the access log is appended every 0.2 s
    batches = [r for r in read(server.access_log) if isinstance(r, Batch)]
    per_adapter = Counter(name for b in batches for name in b.adapters)
    first = Counter()
    for b in batches:
        for name, count in zip(b.adapters, b.new_requests, strict=True):
            first[name] += count
    sent = Counter(SEQUENCE)
    assert {k: first[k] for k in sent} == sent  # every request first scheduled in one recorded batch
    for name, count in sent.items():  # a prefill and decode steps per request, hit or miss
        assert per_adapter[name] >= count * TOKENS - count, name
