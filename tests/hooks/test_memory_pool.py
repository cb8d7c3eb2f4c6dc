"""The gpu tier, request by request, against an independent pool model and SGLang's own counts."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.adapter_sizes import host_bytes
from tests.conftest import generate, lora_paths, metrics_when, post, running_server
from tests.pool_model import BASE, PoolModel

pytestmark = pytest.mark.server
ADAPTERS = ["qa", "sql", "chat", "code", "math", "legal"]
# The sequence of the pool walk-through: refills, hits, repeated evictions, a pause longer than the
# thrash window, an unload, a reload.
SEQUENCE = ["qa", "sql", "chat", "chat", "code", "math", "chat", "pause", "legal", "code", "code", "unload:math",
            "math"]
# A step (request, then scrapes until the counts settle) takes up to a second on a loaded machine: a victim
# is back within 4.5 s (four steps), or after the pause.
THRASH_WINDOW_S, PAUSE_S = 6.0, 10.0


def _sglang_state(tmp: Path) -> dict:
    return json.loads((tmp / "sglang-state.json").read_text())


def _walk(bed, tmp: Path, policy: str) -> None:
    flags = ["--max-loras-per-batch", "3", "--lora-eviction-policy", policy, *lora_paths(bed, ADAPTERS)]
    model = PoolModel(slots=3, policy=policy)
    hits, misses, loads, evictions = Counter(), Counter(), Counter({BASE: 1}), Counter()
    evicted_during: dict[str, tuple[float, float]] = {}  # victim -> (start, end) of the request that evicted it
    reuses: dict[str, list[tuple[float, float]]] = defaultdict(list)  # bounds of each reuse time
    env = {"LORA_TELEMETRY_THRASH_WINDOW_S": str(THRASH_WINDOW_S)}
    with running_server(bed, flags, probe=True, tmp=tmp, env=env) as server:
        for step, action in enumerate(SEQUENCE, 1):
            if action == "pause":
                time.sleep(PAUSE_S)
                continue
            if action.startswith("unload:"):
                name = action.split(":", 1)[1]
                status, _ = post(server, "/unload_lora_adapter", {"lora_name": name})
                assert status == 200
                model.unload(name)
                continue
            hit, victim = model.request(action)
            start = time.monotonic()
            generate(server, action, tokens=2)
            end = time.monotonic()
            if not hit and action in evicted_during:
                evicted_at = evicted_during.pop(action)
                reuses[action].append((start - evicted_at[1], end - evicted_at[0]))
            if victim:
                evicted_during[victim] = (start, end)
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
    _check_reuses(metrics, reuses)
    _check_bytes_copied(bed, metrics, loads)


def _check_bytes_copied(bed, metrics, loads: Counter) -> None:
    """Each slot load copies its adapter's weights once, as the files give them; the base model's
    slot is only zeroed."""
    copied = {k: v for k, v in metrics.by("sglang_lora_pool_slot_load_bytes_total", "lora_name").items() if v}
    assert copied == {name: count * host_bytes(bed.adapters()[name], bed.model)
                      for name, count in loads.items() if name != BASE}


def _check_reuses(metrics, reuses: dict[str, list[tuple[float, float]]]) -> None:
    """Each reuse time lies between the two requests' bounds; thrash reloads are those inside the window."""
    thrash = {name: sum(1 for low, high in spans if high <= THRASH_WINDOW_S) for name, spans in reuses.items()}
    for name, spans in reuses.items():
        assert all(high <= THRASH_WINDOW_S or low > THRASH_WINDOW_S for low, high in spans), spans  # unambiguous
        assert metrics.total("sglang_lora_pool_reuse_seconds_count", lora_name=name) == len(spans), name
        total = metrics.total("sglang_lora_pool_reuse_seconds_sum", lora_name=name)
        assert sum(low for low, _ in spans) <= total <= sum(high for _, high in spans), (name, total, spans)
    assert metrics.by("sglang_lora_pool_thrash_reloads_total", "lora_name") == {n: c for n, c in thrash.items() if c}
    assert 0 < sum(thrash.values()) < sum(map(len, reuses.values()))  # some reloads were thrash, some not


def test_lru_pool_follows_the_lru_rule_request_by_request(bed, tmp_path):
    _walk(bed, tmp_path, "lru")


def test_fifo_pool_follows_the_fifo_rule_request_by_request(bed, tmp_path):
    _walk(bed, tmp_path, "fifo")
