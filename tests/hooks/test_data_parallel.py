"""A real ``--dp 2`` server: one counting scheduler per replica, each with its own pool and host
copies, its series told apart by ``dp_rank`` and adding up to what was sent."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.adapter_sizes import host_bytes
from tests.conftest import generate, lora_paths, metrics_when, running_server

pytestmark = pytest.mark.server
REPLICAS = 2
SEQUENCE = ["qa", "sql", "qa", "chat", "sql", "chat", "qa", "code"]


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp2")
    flags = ["--dp", str(REPLICAS), "--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql", "chat", "code"])]
    with running_server(bed, flags, env={"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}, tmp=tmp) as server:
        yield server


def test_each_replica_counts_its_own_requests_and_pool(server, bed):
    for name in SEQUENCE:
        generate(server, name)
    m = metrics_when(server, lambda m: m.total("sglang_lora_cache_lookups_total", tier="gpu") == len(SEQUENCE))
    assert m.by("sglang_lora_requests_total", "lora_name") == Counter(SEQUENCE)
    assert m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu") == Counter(SEQUENCE)
    replicas = {s.labels["dp_rank"] for s in m.select("sglang_lora_cache_lookups_total", tier="gpu") if s.value}
    assert replicas == {"0", "1"}  # both served
    for dp in replicas:  # sequential requests: each miss is one copy into that replica's pool
        misses = {k: v for k, v in m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu",
                                        result="miss", dp_rank=dp).items() if v}
        loads = m.by("sglang_lora_pool_slot_loads_total", "lora_name", dp_rank=dp)
        assert {k: v for k, v in loads.items() if k != "__base__"} == misses, dp
    for name in ("qa", "sql", "chat", "code"):
        assert m.by("sglang_lora_adapter_memory_bytes", "dp_rank", lora_name=name, tier="host") == \
            {str(dp): host_bytes(bed.adapters()[name], bed.model) for dp in range(REPLICAS)}
    assert m.by("sglang_lora_adapters_loaded", "dp_rank") == {"0": 4, "1": 4}
