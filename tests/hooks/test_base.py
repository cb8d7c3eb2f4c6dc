"""Hooks that fail, and hook targets that are missing, never cost a request."""

from __future__ import annotations

import time

import pytest

from lora_telemetry.hooks import DECLARED
from lora_telemetry.scrape import Metrics
from tests.conftest import lora_paths, metrics_when, post, running_server

pytestmark = pytest.mark.server
NAMES = ["qa", "sql", None, "chat", "code", "qa", "sql", "chat"]
HIDDEN = "sglang.srt.managers.scheduler.Scheduler.can_schedule_lora_req"
# In the faulty run priorities are asked for where SGLang (as far as we can tell) cannot take them.
NO_POLICY_FACTORY = "sglang.srt.lora.eviction_policy.get_eviction_policy"
# Every hook raises, except the one that puts our series on /metrics (we read the counts there).
FAULTY = sorted({spec.name for spec in DECLARED} - {"http_metrics", "scheduler_admission"})


def _traffic(server) -> list[tuple[int, str]]:
    out = []
    for name in NAMES:
        status, body = post(server, "/generate", {"text": "the adapter pool", "lora_path": name,
                                                  "sampling_params": {"max_new_tokens": 6, "temperature": 0}})
        out.append((status, body["text"] if status == 200 else body))
    status, body = post(server, "/load_lora_adapter", {"lora_name": "math", "lora_path": server.math})
    out.append((status, body.get("success")))
    status, body = post(server, "/unload_lora_adapter", {"lora_name": "math"})
    out.append((status, body.get("success")))
    return out


# Hooks that the traffic below makes run after start-up (the others run once, at start-up).
EXERCISED = {"tokenizer_validate", "tokenizer_on_demand", "tokenizer_batch_output", "tokenizer_load",
             "tokenizer_unload", "manager_load", "manager_unload", "pool_prepare_batch", "pool_slot_copy",
             "scheduler_run_batch", "scheduler_idle"}


def _errors(server) -> dict[str, float]:
    time.sleep(1)  # scheduler snapshots land within a second
    return metrics_when(server, lambda m: True).by("sglang_lora_telemetry_errors_total", "hook")


@pytest.fixture(scope="module")
def runs(bed, tmp_path_factory):
    flags = ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql", "chat", "code"])]
    results = {}
    tmp = tmp_path_factory.mktemp("in_turn")
    switch = tmp / "faulty-hooks"
    switch.write_text("")
    with running_server(bed, flags, env={"LORA_TELEMETRY_FAULT_HOOKS": f"@{switch}"}, tmp=tmp) as server:
        server.math = str(bed.adapters()["math"])
        results["reference"] = (_traffic(server), metrics_when(server, lambda m: True), "")
        turns = {}
        for hook in sorted(EXERCISED | {"scheduler_admission", "tokenizer_release"}):
            switch.write_text(hook)
            time.sleep(0.5)
            before = _errors(server)
            traffic = _traffic(server)
            switch.write_text("")
            turns[hook] = (traffic, _errors(server).get(hook, 0) - before.get(hook, 0))
        results["turns"] = turns
    faulty_tmp = tmp_path_factory.mktemp("faulty")
    (faulty_tmp / "priorities.json").write_text('{"qa": 1}')
    env = {"LORA_TELEMETRY_FAULT_HOOKS": ",".join(FAULTY),
           "LORA_TELEMETRY_HIDE_TARGETS": f"{HIDDEN},{NO_POLICY_FACTORY}",
           "LORA_TELEMETRY_PRIORITIES": str(faulty_tmp / "priorities.json")}
    with running_server(bed, flags, env=env, tmp=faulty_tmp) as server:
        server.math = str(bed.adapters()["math"])
        traffic = _traffic(server)
        time.sleep(1)
        results["faulty"] = (traffic, metrics_when(server, lambda m: True), server.log_path.read_text())
    return results


def test_each_hook_in_turn_raising_changes_no_output_and_counts_its_errors(runs):
    reference = runs["reference"][0]
    assert all(status == 200 for status, _ in reference)
    for hook, (traffic, errors) in runs["turns"].items():
        assert traffic == reference, hook
        if hook in EXERCISED:
            assert errors > 0, hook


def test_every_request_succeeds_with_the_same_output_when_hooks_raise(runs):
    reference, faulty = runs["reference"][0], runs["faulty"][0]
    assert all(status == 200 for status, _ in reference)
    assert faulty == reference


def test_each_failing_hook_counts_its_errors(runs):
    metrics: Metrics = runs["faulty"][1]
    errors = metrics.by("sglang_lora_telemetry_errors_total", "hook")
    for hook in EXERCISED - {"scheduler_idle"}:
        assert errors.get(hook, 0) > 0, hook
    assert errors["tokenizer_validate"] >= len(NAMES)
    assert not any(v for k, v in runs["reference"][1].by("sglang_lora_telemetry_errors_total", "hook").items())


def test_a_missing_target_disables_only_its_hook(runs):
    active = runs["faulty"][1].by("sglang_lora_telemetry_hooks_active", "hook")
    assert active["scheduler_admission"] == 0
    assert all(v == 1 for k, v in active.items() if k not in ("scheduler_admission", "eviction_priority"))
    assert "hook scheduler_admission disabled, target missing" in runs["faulty"][2]


def test_priorities_that_this_sglang_cannot_take_are_refused_once_and_serving_goes_on(runs):
    active, log = runs["faulty"][1].by("sglang_lora_telemetry_hooks_active", "hook"), runs["faulty"][2]
    assert active["eviction_priority"] == 0
    assert log.count("refused: this SGLang has no") == 1
    assert f"lora_telemetry: adapter priorities (LORA_TELEMETRY_PRIORITIES, a plan's priorities, " \
           f"LoRAEngine(priorities=...)) refused: this SGLang has no {NO_POLICY_FACTORY}" in log
    assert all(status == 200 for status, _ in runs["faulty"][0])


def test_failures_are_logged_once_per_hook(runs):
    log = runs["faulty"][2]
    assert log.count("lora_telemetry hook pool_prepare_batch failed") == 1
