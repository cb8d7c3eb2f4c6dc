"""The gpu tier, request by request, against an independent pool model and SGLang's own counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import generate, lora_paths, metrics_when, post, running_server
from tests.pool_model import BASE, PoolModel

pytestmark = pytest.mark.server
ADAPTERS = ["qa", "sql", "chat", "code", "math", "legal"]
# The sequence of the pool walk-through: refills, hits, repeated evictions, an unload, a reload.
SEQUENCE = ["qa", "sql", "chat", "chat", "code", "math", "chat", "legal", "code", "code", "unload:math", "math"]


def _sglang_state(tmp: Path) -> dict:
    return json.loads((tmp / "sglang-state.json").read_text())


def _walk(bed, tmp: Path, policy: str) -> None:
    flags = ["--max-loras-per-batch", "3", "--lora-eviction-policy", policy, *lora_paths(bed, ADAPTERS)]
    model = PoolModel(slots=3, policy=policy)
    hits, misses, loads, evictions = Counter(), Counter(), Counter({BASE: 1}), Counter()
    with running_server(bed, flags, probe=True, tmp=tmp) as server:
        for step, action in enumerate(SEQUENCE, 1):
            if action.startswith("unload:"):
                name = action.split(":", 1)[1]
                status, _ = post(server, "/unload_lora_adapter", {"lora_name": name})
                assert status == 200
                model.unload(name)
                continue
            hit, victim = model.request(action)
            generate(server, action, tokens=2)
            (hits if hit else misses)[action] += 1
            if not hit:
                loads[action] += 1
            if victim:
                evictions[victim] += 1

            def agrees(m) -> bool:
                got = (m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result="hit"),
                       m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result="miss"),
                       m.by("sglang_lora_pool_slot_loads_total", "lora_name"),
                       m.by("sglang_lora_pool_evictions_total", "lora_name"))
                want = (dict(hits), dict(misses), dict(loads), dict(evictions))
                return all({k: v for k, v in g.items() if v} == w for g, w in zip(got, want, strict=True))

            metrics = metrics_when(server, agrees)
            assert agrees(metrics), f"step {step} ({action}): {metrics.text}"
            sglang = _sglang_state(tmp)
            assert sglang["eviction_count"] == sum(evictions.values()), f"step {step}"
            assert set(sglang["slots"]) == set(model.resident), f"step {step}"
            for name in ADAPTERS + [BASE]:
                resident = metrics.total("sglang_lora_adapter_resident", lora_name=name, tier="gpu")
                assert resident == (1 if name in model.resident else 0), f"step {step}: {name}"
            assert metrics.total("sglang_lora_pool_slots", state="used") == len(model.resident)
            assert metrics.total("sglang_lora_pool_slots", state="free") == 3 - len(model.resident)
    assert sum(evictions.values()) >= 6  # the walk really exercised eviction


def test_lru_pool_follows_the_lru_rule_request_by_request(bed, tmp_path):
    _walk(bed, tmp_path, "lru")


def test_fifo_pool_follows_the_fifo_rule_request_by_request(bed, tmp_path):
    _walk(bed, tmp_path, "fifo")
