"""``LoRAEngine`` with a real in-process SGLang engine (run in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_telemetry.scrape import Metrics
from lora_telemetry.testbed.server import free_port
from tests.adapter_sizes import host_bytes

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def report(bed, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("engine")
    out = tmp / "report.json"
    run = subprocess.run([sys.executable, "-m", "tests.engine_scenario", str(out), str(bed.root), str(free_port())],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(out.read_text())


def test_one_call_mixes_adapters_and_base_in_prompt_order(report):
    assert report["mixed"] == report["direct"]
    assert len(set(report["mixed"])) == 3


def test_first_request_loads_the_adapter(report):
    assert report["loads_after_mixed"] == 2  # qa and sql; the base model needs no load


def test_concurrent_requests_load_an_unloaded_adapter_once(report):
    assert report["single_flight"] == {"loads": 1, "answers": 1, "results": 16}
    metrics = Metrics(report["metrics"])
    assert metrics.total("sglang_lora_adapter_loads_total", lora_name="math", trigger="on_demand",
                         result="success") == 1


def test_failed_load_fails_only_its_requests(report):
    assert report["partial"][0] == "AdapterLoadError" and report["partial"][1] == report["direct"][0]
    assert "broken" in report["partial_error"]
    assert report["single_broken"] == "AdapterLoadError"


def test_bad_names_are_refused_before_anything_is_sent(report):
    assert report["bad_names_sent"] == 0
    for name, message in report["bad_names"].items():
        assert message != "accepted", name
        assert "Known adapters: broken, chat, code, fin, legal, math, med, qa, sql" in message, message


def test_sampling_params_list_must_match_the_prompts(report):
    assert "2 prompts" in report["length_mismatch"]


def test_streaming_gives_the_same_text(report):
    assert report["stream"]["chunks"] > 1
    assert report["stream"]["text"] == report["mixed"][1]


def test_priority_is_passed_on(report):
    assert report["priority"]


def test_exporter_serves_our_series_beside_sglangs(report):
    metrics = Metrics(report["metrics"])
    finished = metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished")
    # mixed (qa, sql, base) + direct (qa, sql, base) + 16 math + partial qa + stream sql + priority chat
    assert finished == {"qa": 3, "sql": 3, "__base__": 2, "math": 16, "chat": 1}
    assert any(s.name.startswith("sglang:") for s in metrics.samples)


def test_concurrent_callers_with_unloads_are_counted_exactly(report):
    before = Metrics(report["metrics"]).by("sglang_lora_requests_total", "lora_name", outcome="finished")
    after = Metrics(report["metrics_after_concurrency"])
    finished = after.by("sglang_lora_requests_total", "lora_name", outcome="finished")
    delta = {name: finished[name] - before.get(name, 0) for name in finished if finished[name] != before.get(name, 0)}
    assert delta == report["concurrency_served"]
    assert sum(delta.values()) == 64 * 3
    assert not any(after.by("sglang_lora_requests_in_flight", "lora_name").values())
    unloads = after.total("sglang_lora_adapter_unloads_total", lora_name="chat", reason="api")
    assert unloads == report["concurrency_unloads"] >= 1


def test_adapters_loaded_from_tensors_are_served_and_counted(report, bed):
    tensors = report["tensors"]
    assert tensors["text"] == tensors["from_folder"]  # the same weights as the folder they were read from
    assert "'../policy'" in tensors["bad_name"]
    m = Metrics(report["metrics_after_tensors"])
    assert m.by("sglang_lora_adapter_loads_total", "trigger", lora_name="policy_v1") == {"tensors": 1}
    assert m.total("sglang_lora_requests_total", lora_name="policy_v1", outcome="finished") == 1
    assert m.total("sglang_lora_adapter_memory_bytes", lora_name="policy_v1", tier="host") == \
        host_bytes(bed.adapters()["fin"], bed.model)
    assert m.total("sglang_lora_adapter_resident", lora_name="policy_v1", tier="host") == 1


def test_adapters_sglang_loaded_itself_are_accepted(report):
    assert report["sglang_loaded"]["success"] and report["sglang_loaded"]["text"]


def test_hot_swap_loop_counts_every_version_exactly(report):
    m = Metrics(report["metrics_after_tensors"])
    served = report["hot_swap"]["served"]
    finished = m.by("sglang_lora_requests_total", "lora_name", outcome="finished")
    assert {name: finished.get(name) for name in served} == served
    loads = m.by("sglang_lora_adapter_loads_total", "lora_name", trigger="api", result="success")
    assert {name: loads.get(name) for name in served} == {name: 1 for name in served}
    unloads = m.by("sglang_lora_adapter_unloads_total", "lora_name", reason="api")
    assert {name: unloads.get(name) for name in report["hot_swap"]["unloaded"]} == \
        {name: 1 for name in ("rl_v0", "rl_v1", "rl_v2")}
    resident = {s.labels["lora_name"] for s in m.select("sglang_lora_adapter_resident", tier="host") if s.value}
    assert "rl_v3" in resident and not {"rl_v0", "rl_v1", "rl_v2"} & resident
    assert "'rl_v0': not loaded" in report["unload_twice"]


def test_awaiting_on_another_event_loop_is_refused_clearly(report):
    assert "event loop SGLang's engine was created with" in report["other_loop"]
    assert report["stock_other_loop"] == "no answer in 15 s"  # stock sglang.Engine waits forever there
