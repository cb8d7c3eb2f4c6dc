"""``LoRAEngine(plan=..., priorities=...)``: the plan preloaded and pinned, and with every slot but
one pinned under the priority policy, concurrent mixed traffic still all finishes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_telemetry.scrape import Metrics
from lora_telemetry.testbed.server import free_port
from tests.plan_scenario import NAMES

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def report(bed, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("engine_plan") / "report.json"
    run = subprocess.run([sys.executable, "-m", "tests.plan_scenario", str(out), str(bed.root), str(free_port())],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-5000:]
    report = json.loads(out.read_text())
    report["log"] = run.stderr
    return report


def test_the_plan_is_preloaded_pinned_and_counted_as_preload(report):
    assert report["preloaded"] == {"loaded": ["qa", "chat"], "missing": ["ghost"], "repinned": ["sql"]}
    assert report["log"].count("'ghost' is not in the adapter directory") == 1
    m = Metrics(report["metrics"])
    assert m.by("sglang_lora_adapter_loads_total", "lora_name", trigger="preload") == {"qa": 1, "sql": 1, "chat": 1}
    assert m.by("sglang_lora_adapter_unloads_total", "lora_name") == {"sql": 1}  # loaded unpinned at start
    assert m.total("sglang_lora_pool_slots", state="pinned") == 2  # sql among them
    assert report["environment_restored"]


def test_with_every_slot_but_one_pinned_every_request_finishes(report):
    assert report["finished"] == {name or "__base__": 12 for name in NAMES}
    m = Metrics(report["metrics"])
    requests = m.by("sglang_lora_requests_total", "lora_name")
    assert {name: requests.get(name, 0) for name in report["finished"]} == report["finished"]
    assert m.total("sglang_lora_pool_evictions_total", lora_name="qa") == 0
    assert m.total("sglang_lora_pool_evictions_total", lora_name="sql") == 0
