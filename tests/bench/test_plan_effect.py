"""``bench --plan-effect`` end to end on the test bed's model given as any model would be: an LRU
server and a plan server kept side by side, a plan made between their first runs, a second pair in
the other order, every request of every run counted once by the servers' own gpu lookups."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from lora_telemetry.capacity.recording import read as read_recording
from lora_telemetry.capacity.simulator import PoolSimulator
from lora_telemetry.plan import read
from lora_telemetry.testbed import server_flags

pytestmark = pytest.mark.server
REQUESTS = 60


def test_the_same_workload_is_served_with_lru_then_with_the_plan_made_from_it(bed, tmp_path):
    out = tmp_path / "effect"
    adapters = bed.adapters()
    run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "bench", "--plan-effect",
                          "--model", str(bed.model), "--adapter-dir", str(bed.adapter_dir),
                          "--server-flags", shlex.join(server_flags(bed.root)), "--side-by-side", "0.3,0.3",
                          "--rounds", "2", "--adapters", str(len(adapters)), "--slots", "3",
                          "--requests", str(REQUESTS), "--rate", "6", "--output-len", "2:6",
                          "--out", str(out)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in out.glob("server-*.log")) == ["server-LRU.log", "server-plan.log"]  # kept
    figures = json.loads((out / "plan-effect.json").read_text())
    assert len(figures["pairs"]) == 2 and "plan / LRU over 2 pairs" in run.stdout
    for pair in figures["pairs"]:
        for served in pair.values():
            assert served["ok"] == REQUESTS and served["hits"] + served["misses"] == REQUESTS  # this run's only
    plan = read(out / "plan.json")
    for served in ("stock", "planned"):
        assert figures[served]["ok"] == REQUESTS
        assert figures[served]["hits"] + figures[served]["misses"] == REQUESTS  # one gpu lookup per request
    assert figures["planned"]["predicted"] == plan.predicted["gpu_hit_rate"]
    low, high = figures["planned"]["predicted_range"]
    assert [low, high] == plan.predicted["gpu_hit_rate_range"] and low <= plan.predicted["gpu_hit_rate"] <= high
    assert figures["stock"]["gpu_hit_rate"] == plan.predicted["recorded_gpu_hit_rate"]  # the replay is exact
    # Slot loads per adapter, as the servers counted them: the stock run's are its own log replayed,
    # which is what the plan predicted for LRU, and a pinned adapter is copied into its slot at most
    # once and never leaves it.
    replayed = PoolSimulator(3).replay(list(read_recording(out / "stock-access.log")))
    assert figures["stock"]["slot_loads"] == {name: replayed.slot_loads.get(name, 0)
                                              for name in figures["stock"]["slot_loads"]}
    assert figures["stock"]["hot_slot_loads"] == sum(replayed.slot_loads.get(name, 0) for name in figures["hot"])
    assert figures["stock"]["slot_loads_total"] == plan.predicted["recorded_slot_loads"] == \
        sum(n for name, n in replayed.slot_loads.items() if name != "__base__")
    assert figures["stock"]["reloads"] == sum(replayed.reloads.values())
    assert all(figures["planned"]["slot_loads"].get(name, 0) <= 1 for name in plan.pin)
    # The plan server is kept: what it pinned in the first pair is still in its slot in the second.
    assert all(figures["pairs"][1]["plan"]["slot_loads"].get(name, 0) == 0 for name in plan.pin)
    assert figures["plan_helps"] == (plan.predicted["slot_load_s"] < plan.predicted["recorded_slot_load_s"])
    assert (out / "plan_effect.png").stat().st_size > 10_000
    assert "The same workload, SGLang's LRU and the plan" in run.stdout
