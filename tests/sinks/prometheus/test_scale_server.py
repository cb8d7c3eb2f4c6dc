"""1,000 adapters that have all served a request: every per-adapter series is on /metrics, exact."""

from __future__ import annotations

import pytest

from lora_telemetry.bench.scrape import populate
from tests.conftest import metrics_when, running_server

pytestmark = pytest.mark.server
ADAPTERS = 1000


def test_every_adapters_series_is_exact_at_a_thousand_adapters(bed, tmp_path):
    env = {"LORA_TELEMETRY_MAX_ADAPTER_LABELS": "2000"}
    with running_server(bed, ["--max-loras-per-batch", "8"], env=env, tmp=tmp_path) as server:
        names = populate(server.url, bed.adapter_dir, ADAPTERS, tmp_path / "adapters")
        # every adapter's slot load (the base model's count too, so a total would be reached one early)
        metrics = metrics_when(server, lambda m: set(names) <= set(m.by("sglang_lora_pool_slot_loads_total",
                                                                         "lora_name")), timeout=60)
    finished = metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished")
    assert all(finished.get(name) == 1 for name in names)
    loads = metrics.by("sglang_lora_adapter_loads_total", "lora_name", trigger="api", result="success")
    assert all(loads.get(name) == 1 for name in names)
    for family, match in (("sglang_lora_cache_lookups_total", {"tier": "gpu"}),
                          ("sglang_lora_cache_lookups_total", {"tier": "host"}),
                          ("sglang_lora_pool_slot_loads_total", {}),
                          ("sglang_lora_adapter_memory_bytes", {"tier": "host"}),
                          ("sglang_lora_time_to_first_token_seconds_count", {})):
        per_adapter = metrics.by(family, "lora_name", **match)
        assert set(names) <= set(per_adapter), family
    assert metrics.total("sglang_lora_adapters_loaded") == ADAPTERS
    assert metrics.total("sglang_lora_telemetry_label_overflow_total") == 0
