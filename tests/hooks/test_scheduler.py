"""Scheduler view on a real server: routing gauges while requests are in flight, admission deferrals."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from lora_telemetry.scrape import Metrics
from tests.conftest import generate, lora_paths, metrics_when, post, running_server

pytestmark = pytest.mark.server
SLOTS = 3


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scheduler")
    refused = tmp / "refused.json"
    with running_server(bed, ["--max-loras-per-batch", str(SLOTS), *lora_paths(bed, ["qa", "sql", "chat", "code"])],
                        env={"SGLANG_ADMISSION_PROBE_FILE": str(refused)}, probe=True, tmp=tmp) as server:
        server.refused = refused
        yield server


def _long(server, name: str, tokens: int = 300) -> None:
    post(server, "/generate", {"text": "a long answer", "lora_path": name,
                               "sampling_params": {"max_new_tokens": tokens, "ignore_eos": True}})


def _parse_info(metrics: Metrics) -> tuple[set[str], set[str], str, float]:
    """As the Gateway API Inference Extension's endpoint picker reads it: split on commas, trim."""
    [sample] = metrics.select("sglang_lora_requests_info")
    running = {n.strip() for n in sample.labels["running_lora_adapters"].split(",") if n.strip()}
    waiting = {n.strip() for n in sample.labels["waiting_lora_adapters"].split(",") if n.strip()}
    return running, waiting, sample.labels["max_lora"], sample.value


def test_requests_info_lists_running_and_waiting_adapters_in_flight(server):
    threads = [threading.Thread(target=_long, args=(server, name)) for name in ("qa", "sql", "chat", "code")]
    for thread in threads:
        thread.start()
    seen_running: set[str] = set()
    seen_waiting: set[str] = set()
    deadline = time.monotonic() + 30
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        metrics = Metrics.fetch(server.url)
        if not metrics.select("sglang_lora_requests_info"):
            continue  # before the first batch
        running, waiting, max_lora, updated = _parse_info(metrics)
        assert max_lora == str(SLOTS)
        assert running <= {"qa", "sql", "chat", "code"} and len(running) <= SLOTS  # base slot can be taken
        assert abs(time.time() - updated) < 5
        seen_running |= running
        seen_waiting |= waiting
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    assert len(seen_running) >= 2 and seen_waiting  # three slots for four adapters: someone waited
    m = metrics_when(server, lambda m: _parse_info(m)[:2] == (set(), set()))
    assert _parse_info(m)[:2] == (set(), set())
    assert not any(m.by("sglang_lora_requests_running", "lora_name").values())
    assert not any(m.by("sglang_lora_requests_waiting", "lora_name").values())


def test_each_deferred_request_is_counted_once_with_its_wait(server):
    """Against the requests SGLang's admission check refused, read by a probe plugin of its own."""
    threads = [threading.Thread(target=_long, args=(server, name, 60)) for name in ("qa", "sql", "chat", "code") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = Counter(json.loads(server.refused.read_text()).values())
    m = metrics_when(server, lambda m: m.by("sglang_lora_admission_deferrals_total", "lora_name") == refused)
    assert m.by("sglang_lora_admission_deferrals_total", "lora_name", reason="slot") == refused
    assert sum(refused.values()) >= 2  # three slots for four adapters: requests waited
    assert m.by("sglang_lora_admission_wait_seconds_count", "lora_name") == refused  # each one was scheduled
    assert 0 < m.total("sglang_lora_admission_wait_seconds_sum") < 300


def test_batches_record_their_distinct_adapters(server):
    generate(server, "qa")
    m = metrics_when(server, lambda m: m.total("sglang_lora_batch_adapters_count") > 0)
    count = m.total("sglang_lora_batch_adapters_count")
    assert count > 0 and m.total("sglang_lora_batch_adapters_sum") >= count  # at least one adapter per batch
    assert m.quantile("sglang_lora_batch_adapters", 1.0) <= SLOTS
