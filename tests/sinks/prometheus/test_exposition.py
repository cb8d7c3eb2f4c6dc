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
from lora_telemetry.sinks.prometheus.snapshots import MAX_CPU_SHARE, PUBLISH_INTERVAL_S, Publisher, pause_after
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


def test_a_costly_publish_is_followed_by_a_longer_pause():
    """Publishing shares the GIL with the scheduler's loop: at most MAX_CPU_SHARE of the time."""
    assert pause_after(0.0) == PUBLISH_INTERVAL_S
    for spent in (0.001, 0.03, 0.3):
        assert spent / (spent + pause_after(spent)) <= MAX_CPU_SHARE + 1e-9
    assert pause_after(0.3) > 5 * PUBLISH_INTERVAL_S


def test_memory_of_every_rank_of_a_replica_adds_up_and_is_counted_once(tmp_path):
    """A TP rank that does not count reports only the bytes it holds, under the same dp_rank."""
    counting, memory_only = Store(), Store()
    PrometheusSink(counting, 100).record(ev.Residency("qa", "host", True, 1000, False))
    PrometheusSink(counting, 100).record(ev.PoolState(used=2, free=1, pinned=0, capacity_bytes=300))
    PrometheusSink(memory_only, 100).record(ev.Residency("qa", "host", True, 1000, False, memory_only=True))
    PrometheusSink(memory_only, 100).record(ev.PoolState(used=2, free=1, pinned=0, capacity_bytes=300,
                                                         memory_only=True))
    Publisher(counting, tmp_path, {"dp_rank": "0"}).publish()
    Publisher(memory_only, tmp_path, {"dp_rank": "0"}, pid=os.getppid()).publish()
    metrics = Metrics(Renderer(Store(), tmp_path).render().decode())
    assert metrics.total("sglang_lora_adapter_memory_bytes", lora_name="qa", tier="host") == 2000
    assert metrics.total("sglang_lora_pool_capacity_bytes") == 600
    assert metrics.total("sglang_lora_adapter_resident", lora_name="qa") == 1
    assert metrics.total("sglang_lora_adapters_loaded") == 1
    assert metrics.total("sglang_lora_pool_slots", state="used") == 2


def test_routing_gauges_past_the_label_cap_add_up_in_other():
    store = Store()
    sink = PrometheusSink(store, 1)
    sink.record(ev.RoutingState({"qa": 1, "sql": 2, "chat": 3}, {}, 3, 0.0))
    sink.record(ev.RoutingState({"qa": 1}, {}, 3, 0.0))
    metrics = Metrics(Renderer(store, None).render().decode())
    assert metrics.by("sglang_lora_requests_running", "lora_name") == {"qa": 1, "__other__": 0}


def test_reused_lines_and_label_texts_never_hide_a_new_value_or_a_new_series():
    """Renders reuse the line of a series whose value did not change and the text of a label set
    seen before: a render after a change must still show every current value, and new series."""
    store = Store()
    sink = PrometheusSink(store, 100)
    renderer = Renderer(store, None)
    expected: dict[str, int] = {}
    for step in range(4):
        for name in [f"a{i}" for i in range(step * 3)]:
            if (hash(name) + step) % 2:  # some adapters served in between, others not
                sink.record(ev.RequestFinished(name, "finished", 5, 7, 0.01, 0.1))
                expected[name] = expected.get(name, 0) + 1
        sink.record(ev.RequestFinished(f"new{step}", "finished", 5, 7, 0.01, 0.1))
        expected[f"new{step}"] = 1
        metrics = Metrics(renderer.render().decode())
        assert metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished") == expected
        assert metrics.by("sglang_lora_generation_tokens_total", "lora_name") == {n: 7 * c for n, c in expected.items()}
