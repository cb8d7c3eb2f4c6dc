"""A real ``--dp 2`` server: one counting scheduler per replica, each with its own pool and host
copies, its series told apart by ``dp_rank`` and adding up to what was sent."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.adapter_sizes import host_bytes
from tests.conftest import generate, lora_paths, metrics_when, post, running_server, unexpected_errors

pytestmark = pytest.mark.server
REPLICAS = 2
SEQUENCE = ["qa", "sql", "qa", "chat", "sql", "chat", "qa", "code"]
LOADED = ["qa", "sql", "chat", "code"]


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp2")
    flags = ["--dp", str(REPLICAS), "--max-loras-per-batch", "3", *lora_paths(bed, LOADED)]
    env = {"SGLANG_CPU_OMP_THREADS_BIND": "0|1", "LORA_TELEMETRY_ADAPTER_DIR": str(bed.adapter_dir)}
    with running_server(bed, flags, env=env, tmp=tmp) as server:
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
    for name in LOADED:
        assert m.by("sglang_lora_adapter_memory_bytes", "dp_rank", lora_name=name, tier="host") == \
            {str(dp): host_bytes(bed.adapters()[name], bed.model) for dp in range(REPLICAS)}
    assert m.by("sglang_lora_adapters_loaded", "dp_rank") == {"0": 4, "1": 4}


def test_the_adapter_directory_is_refused_once_at_start_and_its_adapters_rejected(server, bed):
    """SGLang loads no adapter at runtime with --dp N (it asserts): the server says so once at start-up
    instead of trying a load per request (which failed inside our hook, counted as our own error),
    and a request naming an adapter of the directory that --lora-paths did not give is rejected as
    never loaded."""
    unloaded = next(name for name in bed.adapters() if name not in LOADED)
    for _ in range(3):
        status, body = post(server, "/generate", {"text": "x", "lora_path": unloaded,
                                                  "sampling_params": {"max_new_tokens": 2}})
        assert status == 400, body
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", outcome="rejected") == 3)
    assert m.total("sglang_lora_adapter_loads_total", trigger="on_demand") == 0
    log = server.log_path.read_text()
    assert log.count("LORA_TELEMETRY_ADAPTER_DIR is not used") == 1
    assert unexpected_errors(log) == []
