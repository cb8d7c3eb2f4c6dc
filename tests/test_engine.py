"""``LoRAEngine`` with a real in-process SGLang engine (run in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_telemetry.scrape import Metrics
from lora_telemetry.testbed.server import free_port

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
