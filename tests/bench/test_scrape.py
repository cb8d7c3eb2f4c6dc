"""The scrape benchmark measures what a real server holds: every per-adapter family."""

from __future__ import annotations

from lora_telemetry.bench import scrape
from lora_telemetry.sinks.prometheus.families import FAMILIES

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


def test_synthetic_scrapes_time_rendering_and_publishing():
    cost = scrape.synthetic(20, scrapes=2)
    assert cost.exposition_bytes > 20 * 10_000  # a hundred series and more per adapter
    assert cost.render.median > 0 and cost.publish.median > 0
