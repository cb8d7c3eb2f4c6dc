"""The scrape benchmark measures what a real server holds: every per-adapter family."""

from __future__ import annotations

from lora_telemetry.bench import scrape
from lora_telemetry.sinks.prometheus.families import FAMILIES

# Gauges of the requests in a batch and in the queue: a few adapters at a time, not all of them
ROUTING = {"sglang_lora_requests_running", "sglang_lora_requests_waiting"}


def test_every_adapter_has_a_series_in_every_family_that_names_adapters():
    main, scheduler = scrape.adapter_series(50)
    for family in FAMILIES:
        if "lora_name" not in family.labels:
            continue
        series = {**main.values[family.name], **scheduler.values[family.name]}
        names = {labels[family.labels.index("lora_name")] for labels in series}
        if family.name in ROUTING:
            assert names, family.name
        else:
            assert {f"tenant-{i:05d}" for i in range(50)} <= names, family.name


def test_synthetic_scrapes_time_rendering_and_publishing():
    cost = scrape.synthetic(20, scrapes=2)
    assert cost.exposition_bytes > 20 * 10_000  # a hundred series and more per adapter
    assert cost.render.median > 0 and cost.publish.median > 0
