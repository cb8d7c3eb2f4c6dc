"""The advice priced in time, on a GPU: ``bench --plan-effect`` on the 8B-shaped bed, LRU then the plan.

The recording's replay at SGLang's own policy gives back the slot loads, reloads and slot-load time
the LRU server counted and timed; the plan's predicted slot loads are within 10% of what its server
measures. (On an H200, 32 adapters over 8 slots in 3 pairs: exact, and the plan 4 to 6% off; README.)
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from lora_telemetry.capacity.recording import read
from lora_telemetry.capacity.simulator import PoolSimulator
from tests.gpu.conftest import on_cpu

SLOTS, ADAPTERS = 4, 16


def test_the_lru_replay_is_exact_and_the_plans_slot_loads_are_predicted_within_a_tenth(shaped_bed, host_flags,
                                                                                       tmp_path, figures_out):
    out = tmp_path / "effect"
    traffic = ["--requests", "60"] if on_cpu() else ["--duration", "30"]
    run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "bench", "--plan-effect",
                          "--model", str(shaped_bed.model), "--adapter-dir", str(shaped_bed.adapter_dir),
                          "--adapters", str(ADAPTERS), "--slots", str(SLOTS), "--alpha", "1", "--rate", "6", *traffic,
                          "--prompt-len", "16:256", "--output-len", "16:128", "--seed", "2",
                          "--server-flags", shlex.join([*host_flags, "--mem-fraction-static", "0.6"]),
                          "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads((out / "plan-effect.json").read_text())
    if figures_out:
        (figures_out / "plan-effect.json").write_text(json.dumps(figures, indent=1))
    stock, planned, recorded = figures["stock"], figures["planned"], figures["recorded_predicted"]
    assert stock["ok"] == planned["ok"] > 0
    replayed = PoolSimulator(SLOTS).replay(list(read(out / "stock-access.log")))
    assert stock["slot_loads"] == {name: replayed.slot_loads.get(name, 0) for name in stock["slot_loads"]}
    assert stock["slot_loads_total"] == recorded["slot_loads"]
    assert stock["reloads"] == recorded["reloads"] == sum(replayed.reloads.values())
    assert stock["slot_load_s"] == pytest.approx(recorded["slot_load_s"], rel=1e-4)  # the server's own timings
    assert abs(planned["predicted_slot_loads"] - planned["slot_loads_total"]) <= 0.1 * planned["slot_loads_total"]
