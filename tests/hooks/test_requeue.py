"""Retraction on a real server: a KV cache too small for the running batch makes SGLang send
requests back to the waiting queue. Each is counted under its adapter as SGLang's own log counts
them, and every request's phases still cover its time in the scheduler."""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest

from tests.conftest import lora_paths, metrics_when, post, running_server, unexpected_errors

pytestmark = pytest.mark.server
ADAPTERS = ["qa", "sql", "chat"]
PER_ADAPTER = 4
TOKENS = 300


@pytest.fixture(scope="module")
def retracting(bed, tmp_path_factory):
    """Twelve requests of 300 tokens each over a KV cache of 1,024 tokens: SGLang, told to admit almost
    as if requests ended at once (conservativeness 0.02), admits them all and then runs out. (With
    ``ignore_eos`` SGLang reserves every token a request may take; ``min_new_tokens`` fixes the
    length without that.)"""
    tmp = tmp_path_factory.mktemp("requeue")
    flags = ["--max-loras-per-batch", "4", "--max-total-tokens", "1024", "--schedule-conservativeness", "0.02",
             *lora_paths(bed, ADAPTERS)]
    with running_server(bed, flags, tmp=tmp) as server:
        sent: Counter = Counter()
        lock = threading.Lock()

        def one(name: str, i: int) -> None:
            status, body = post(server, "/generate", {
                "text": f"request {i} of {name}", "lora_path": name,
                "sampling_params": {"max_new_tokens": TOKENS, "min_new_tokens": TOKENS, "temperature": 0}})
            assert status == 200, body
            with lock:
                sent[name] += 1

        threads = [threading.Thread(target=one, args=(name, i)) for i in range(PER_ADAPTER) for name in ADAPTERS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        metrics = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", outcome="finished")
                               == len(threads), timeout=30)
        yield server, metrics, sent


def _retracted_by_sglang(log: str) -> int:
    """SGLang's own count: it logs each retraction with ``#retracted_reqs: N``."""
    return sum(int(n) for n in re.findall(r"#retracted_reqs: (\d+)", log))


def test_every_retraction_is_counted_under_its_adapter(retracting):
    server, metrics, sent = retracting
    retracted = _retracted_by_sglang(server.log_path.read_text())
    assert retracted > 0, "SGLang retracted nothing: the scenario did not happen"
    counted = metrics.by("sglang_lora_requests_requeued_total", "lora_name", reason="retract")
    assert sum(counted.values()) == retracted
    assert set(counted) <= set(ADAPTERS)
    assert metrics.total("sglang_lora_requests_requeued_total", reason="preempt") == 0
    assert not unexpected_errors(server.log_path.read_text())


def test_a_retracted_request_is_one_request_one_lookup_and_one_set_of_phases(retracting):
    _, metrics, sent = retracting
    finished = metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished")
    assert {name: finished.get(name, 0) for name in sent} == dict(sent)
    lookups = metrics.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu")
    assert {name: lookups.get(name, 0) for name in sent} == dict(sent)
    for name, count in sent.items():
        for phase in ("queue", "prefill"):
            assert metrics.total("sglang_lora_ttft_phase_seconds_count", lora_name=name, phase=phase) == count
    assert metrics.total("sglang_lora_admission_deferrals_total") == 0
