"""Merging snapshots of several processes and rendering the text format."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from lora_telemetry import events as ev
from lora_telemetry.scrape import Metrics
from lora_telemetry.sinks.prometheus import PrometheusSink
from lora_telemetry.sinks.prometheus.exposition import Renderer
from lora_telemetry.sinks.prometheus.snapshots import Publisher
from lora_telemetry.sinks.prometheus.store import Store


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _scheduler_store(evictions: int) -> Store:
    store = Store()
    sink = PrometheusSink(store, 100)
    for _ in range(evictions):
        sink.record(ev.SlotEvicted("qa", 1))
    sink.record(ev.PoolState(used=3, free=0, pinned=0, capacity_bytes=1000))
    return store


def test_counters_add_up_over_processes_and_carry_dp_rank(tmp_path):
    Publisher(_scheduler_store(2), tmp_path, {"dp_rank": "0"}).publish()
    Publisher(_scheduler_store(3), tmp_path, {"dp_rank": "1"}, pid=os.getppid()).publish()  # a second process
    metrics = Metrics(Renderer(Store(), tmp_path).render().decode())
    assert metrics.by("sglang_lora_pool_evictions_total", "dp_rank") == {"0": 2, "1": 3}


def test_gauges_of_dead_processes_disappear_and_their_counters_stay(tmp_path):
    Publisher(_scheduler_store(4), tmp_path, {"dp_rank": "0"}, pid=_dead_pid()).publish()
    metrics = Metrics(Renderer(Store(), tmp_path).render().decode())
    assert metrics.total("sglang_lora_pool_evictions_total") == 4
    assert metrics.select("sglang_lora_pool_slots") == []


def test_histograms_render_cumulative_buckets_count_and_sum():
    store = Store()
    sink = PrometheusSink(store, 100)
    for seconds in (0.003, 0.2, 0.2, 7.0):
        sink.record(ev.RequestFinished("qa", "finished", 3, 4, seconds, seconds))
    metrics = Metrics(Renderer(store, None).render().decode())
    buckets = {s.labels["le"]: s.value for s in metrics.select("sglang_lora_time_to_first_token_seconds_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.25"] == 3 and buckets["5"] == 3 and buckets["+Inf"] == 4
    assert metrics.total("sglang_lora_time_to_first_token_seconds_count") == 4
    assert abs(metrics.total("sglang_lora_time_to_first_token_seconds_sum") - 7.403) < 1e-9


def test_hostile_label_values_are_escaped_and_parse_back():
    store = Store()
    sink = PrometheusSink(store, 100)
    name = 'a"b\\c\nd ünïcode'
    sink.record(ev.CacheLookup(name, "gpu", True))
    text = Renderer(store, None).render().decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "sglang_lora_cache_lookups"]
    assert family.samples[0].labels["lora_name"] == name


def test_label_cap_folds_names_into_other_and_counts_overflow():
    store = Store()
    sink = PrometheusSink(store, 2)
    for name in ("a", "b", "c", "d", "a"):
        sink.record(ev.RequestAdmitted(name))
    metrics = Metrics(Renderer(store, None).render().decode())
    assert metrics.by("sglang_lora_requests_in_flight", "lora_name") == {"a": 2, "b": 1, "__other__": 2}
    assert metrics.total("sglang_lora_telemetry_label_overflow_total") == 2


def test_render_is_cached_until_something_changes(tmp_path):
    store = Store()
    renderer = Renderer(store, tmp_path)
    first = renderer.render()
    assert renderer.render() is first
    store.inc("sglang_lora_pool_slot_loads_total", ("qa",))
    assert renderer.render() is not first


def test_snapshot_is_replaced_atomically(tmp_path):
    store = _scheduler_store(1)
    publisher = Publisher(store, tmp_path, {"dp_rank": "0"})
    publisher.publish()
    store.inc("sglang_lora_pool_evictions_total", ("qa",))
    publisher.publish()
    assert sorted(os.listdir(tmp_path)) == [f"{os.getpid()}.snapshot"]
    assert Metrics(Renderer(Store(), tmp_path).render().decode()).total("sglang_lora_pool_evictions_total") == 2


def test_a_count_recorded_by_a_scheduler_is_visible_within_a_second(tmp_path):
    import time

    scheduler = Store()
    Publisher(scheduler, tmp_path, {"dp_rank": "0"}).start()
    renderer = Renderer(Store(), tmp_path)
    start = time.monotonic()
    scheduler.inc("sglang_lora_pool_evictions_total", ("qa",))
    while Metrics(renderer.render().decode()).total("sglang_lora_pool_evictions_total") != 1:
        assert time.monotonic() - start < 1.0
        time.sleep(0.01)
