"""Adapter lifecycle on a real server: loads by trigger, failures, pinning, capacity unloads,
reloads, and memory by tier compared to the byte with sizes computed from the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_telemetry.testbed.model import ALL_PROJECTIONS, AdapterSpec, make_adapter
from tests.adapter_sizes import host_bytes, pool_capacity
from tests.conftest import generate, lora_paths, metrics_when, post, running_server

pytestmark = pytest.mark.server
SLOTS = 3
MAX_LOADED = 4


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    flags = ["--max-loras-per-batch", str(SLOTS), "--max-loaded-loras", str(MAX_LOADED),
             *lora_paths(bed, ["qa", "sql"])]
    with running_server(bed, flags, probe=True, tmp=tmp) as server:
        yield server


def load(server, name: str, path: Path | str, pinned: bool = False) -> tuple[int, dict]:
    return post(server, "/load_lora_adapter", {"lora_name": name, "lora_path": str(path), "pinned": pinned})


def test_startup_adapters_are_counted_as_startup_loads(server):
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapters_loaded") == 2)
    for name in ("qa", "sql"):
        assert m.total("sglang_lora_adapter_loads_total", lora_name=name, trigger="startup", result="success") == 1
        assert m.total("sglang_lora_adapter_resident", lora_name=name, tier="host", pinned="false") == 1
    assert m.total("sglang_lora_adapters_loaded") == 2


def test_host_memory_equals_the_adapter_tensors_to_the_byte(server, bed):
    for name, path in (("chat", bed.adapters()["chat"]),):
        assert load(server, name, path)[0] == 200
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapters_loaded") == 3)
    for name in ("qa", "sql", "chat"):  # all projections at rank 4 and 8; q/v only at rank 4
        expected = host_bytes(bed.adapters()[name], bed.model)
        assert m.total("sglang_lora_adapter_memory_bytes", lora_name=name, tier="host") == expected, name
    assert m.total("sglang_lora_adapter_loads_total", lora_name="chat", trigger="api", result="success") == 1


def test_pool_capacity_equals_the_slot_buffers_to_the_byte(server, bed):
    generate(server, "qa")
    expected = pool_capacity(bed.model, SLOTS, max_rank=8)
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_resident", lora_name="qa", tier="gpu") == 1)
    assert m.total("sglang_lora_pool_capacity_bytes") == expected
    assert m.total("sglang_lora_adapter_memory_bytes", lora_name="qa", tier="gpu") == expected // SLOTS


def test_failed_loads_count_as_failures_and_serving_goes_on(server, bed, tmp_path):
    missing = tmp_path / "no-such-adapter"
    too_big = tmp_path / "rank16"
    make_adapter(bed.model, AdapterSpec("rank16", 16, ALL_PROJECTIONS, seed=7), too_big)
    assert load(server, "missing", missing)[0] == 400
    assert load(server, "rank16", too_big)[0] == 400
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_loads_total", result="failure") == 2)
    assert m.total("sglang_lora_adapter_loads_total", lora_name="missing", trigger="api", result="failure") == 1
    assert m.total("sglang_lora_adapter_loads_total", lora_name="rank16", trigger="api", result="failure") == 1
    assert m.total("sglang_lora_adapters_loaded") == 3
    assert generate(server, "sql")["meta_info"]["completion_tokens"] == 4


def test_pinned_adapter_is_never_evicted(server, bed, tmp_path):
    assert load(server, "code", bed.adapters()["code"], pinned=True)[0] == 200
    for name in ["code", "qa", "sql", "chat", "qa", "code", "sql", "chat", "qa"]:
        generate(server, name, tokens=2)
    m = metrics_when(server, lambda m: m.total("sglang_lora_pool_evictions_total", lora_name="qa") > 0)
    assert m.total("sglang_lora_pool_evictions_total") >= 4
    assert m.total("sglang_lora_pool_evictions_total", lora_name="code") == 0
    assert m.total("sglang_lora_adapter_resident", lora_name="code", tier="gpu", pinned="true") == 1
    assert m.total("sglang_lora_adapter_resident", lora_name="code", tier="host", pinned="true") == 1
    assert m.total("sglang_lora_pool_slots", state="pinned") == 1


def test_max_loaded_loras_unloads_with_reason_capacity(server, bed):
    assert load(server, "math", bed.adapters()["math"])[0] == 200  # a fifth adapter over a cap of four
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_unloads_total", reason="capacity") == 1
                     and m.total("sglang_lora_adapters_loaded") == MAX_LOADED)
    unloaded = m.by("sglang_lora_adapter_unloads_total", "lora_name", reason="capacity")
    assert sum(unloaded.values()) == 1
    victim = next(iter(unloaded))
    assert victim != "code"  # pinned adapters are not unloaded for capacity
    assert m.total("sglang_lora_adapter_resident", lora_name=victim, tier="host") == 0
    assert m.total("sglang_lora_adapter_memory_bytes", lora_name=victim, tier="host") == 0
    assert m.total("sglang_lora_adapters_loaded") == MAX_LOADED
    server.capacity_victim = victim


def test_request_for_an_unloaded_adapter_is_a_host_miss_and_a_reload(server):
    victim = server.capacity_victim
    generate(server, victim)
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_loads_total", lora_name=victim,
                                                trigger="reload") == 1)
    assert m.total("sglang_lora_adapter_loads_total", lora_name=victim, trigger="reload", result="success") == 1
    assert m.total("sglang_lora_cache_lookups_total", lora_name=victim, tier="host", result="miss") == 1
    assert m.total("sglang_lora_adapter_resident", lora_name=victim, tier="host") == 1
    assert m.total("sglang_lora_adapter_unloads_total", reason="capacity") == 2  # the reload pushed another out
    assert m.total("sglang_lora_adapters_loaded") == MAX_LOADED


def test_explicit_unload_clears_both_tiers(server):
    generate(server, "math")
    assert post(server, "/unload_lora_adapter", {"lora_name": "math"})[0] == 200
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_unloads_total", lora_name="math",
                                                reason="api") == 1)
    assert m.total("sglang_lora_adapter_unloads_total", lora_name="math", reason="api") == 1
    for tier in ("host", "gpu"):
        assert m.total("sglang_lora_adapter_resident", lora_name="math", tier=tier) == 0
        assert m.total("sglang_lora_adapter_memory_bytes", lora_name="math", tier=tier) == 0
    assert m.total("sglang_lora_adapters_loaded") == MAX_LOADED - 1
