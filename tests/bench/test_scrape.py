"""The scrape benchmark measures what a real server holds: every per-adapter family."""

from __future__ import annotations

import os
from collections import Counter

from lora_telemetry.bench import scrape
from lora_telemetry.scrape import Metrics
from lora_telemetry.sinks.prometheus.exposition import Renderer
from lora_telemetry.sinks.prometheus.families import FAMILIES, SERIES_PER_ADAPTER
from lora_telemetry.sinks.prometheus.snapshots import Publisher

BUDGET = {f.name for f in FAMILIES if "lora_name" in f.labels and not f.busiest}

# Gauges of the requests in a batch and in the queue: a few adapters at a time, not all of them
ROUTING = {"sglang_lora_requests_running", "sglang_lora_requests_waiting"}
ADAPTERS = 80  # more than the 50 busiest that get series of their own in the costly families


def test_every_adapter_has_its_budget_and_the_first_50_their_histograms():
    main, scheduler = scrape.adapter_series(ADAPTERS)
    everyone = {f"tenant-{i:05d}" for i in range(ADAPTERS)}
    busiest = {f"tenant-{i:05d}" for i in range(50)}
    for family in FAMILIES:
        if "lora_name" not in family.labels:
            continue
        series = {**main.values[family.name], **scheduler.values[family.name]}
        names = {labels[family.labels.index("lora_name")] for labels in series}
        if family.name in ROUTING:
            assert names, family.name
        elif family.busiest:
            assert names == busiest | {"__other__"}, family.name
        else:
            assert names == everyone, family.name


def test_the_exposition_holds_each_adapters_whole_budget_and_no_more(tmp_path):
    main, scheduler = scrape.adapter_series(ADAPTERS)
    Publisher(scheduler, tmp_path, {"dp_rank": "0"}, pid=os.getpid()).publish()
    metrics = Metrics(Renderer(main, tmp_path).render().decode())
    ours = [s for s in metrics.samples if s.name.startswith("sglang_lora_") and "lora_name" in s.labels]
    quiet = Counter(s.labels["lora_name"] for s in ours if s.labels["lora_name"] >= "tenant-00050")
    busy = Counter(s.labels["lora_name"] for s in ours if s.labels["lora_name"] < "tenant-00050" and s.name in BUDGET)
    assert len(quiet) == ADAPTERS - 50 and len(busy) == 50
    assert set(quiet.values()) == set(busy.values()) == {SERIES_PER_ADAPTER}  # each uses all of it, no more


def test_synthetic_scrapes_time_rendering_and_publishing():
    cost = scrape.synthetic(20, scrapes=2)
    assert cost.exposition_bytes > 20 * 10_000 and cost.series > 20 * SERIES_PER_ADAPTER
    assert cost.render.median > 0 and cost.publish.median > 0 and cost.main_cpu.median > 0
