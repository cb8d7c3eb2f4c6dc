"""Thousands of adapters that have all served a request, scraped by a real Prometheus: every
adapter's requests exact, each adapter within its series budget, the busiest families bounded.

CI runs it at 2,000 adapters (1.5 minutes); ``LORA_TELEMETRY_SCALE_ADAPTERS=10000`` runs it at the
budget's 10,000 (15 minutes on the 2-core machine: SGLang loads adapters one at a time)."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from lora_telemetry.bench.scrape import populate
from lora_telemetry.scrape import Metrics
from lora_telemetry.sinks.prometheus.families import BUSIEST, SERIES_PER_ADAPTER
from tests.conftest import metrics_when, running_server
from tests.dashboards.prometheus import Prometheus

pytestmark = pytest.mark.server
ADAPTERS = int(os.environ.get("LORA_TELEMETRY_SCALE_ADAPTERS", "2000"))
TOP = 50  # LORA_TELEMETRY_TOP_ADAPTERS's default
SERIES_LIMIT = 17 * ADAPTERS  # of ours: 170,000 at 10,000 adapters


@pytest.fixture(scope="module")
def scraped(bed, tmp_path_factory):
    """(the server's own /metrics, Prometheus's view of the same moment)."""
    tmp = tmp_path_factory.mktemp("scale")
    with running_server(bed, ["--max-loras-per-batch", "8"], tmp=tmp) as server:
        names = populate(server.url, bed.adapter_dir, ADAPTERS, tmp / "adapters")
        # every adapter's slot load (the base model's count too, so a total would be reached one early)
        metrics_when(server, lambda m: set(names) <= set(m.by("sglang_lora_pool_slot_loads_total", "lora_name")),
                     timeout=120)
        metrics = _agreed(server)
        with Prometheus(f"127.0.0.1:{server.port}", tmp) as prometheus:
            prometheus.wait_for('sum(sglang_lora_requests_total{outcome="finished"})',
                                lambda r: r and float(r[0]["value"][1]) >= ADAPTERS, timeout=120)
            yield names, metrics, prometheus, render_processes(server.process.pid)


def render_processes(pid: int) -> list[str]:
    """Command lines of ``pid``'s descendants that render /metrics (:mod:`...render_helper`)."""
    import psutil

    return [" ".join(child.cmdline()) for child in psutil.Process(pid).children(recursive=True)
            if "render_helper" in " ".join(child.cmdline())]


def _busiest(metrics: Metrics) -> set[str]:
    """Adapters with series in the families kept for the busiest (a member that joined after its
    request may have phases and no TTFT: its TTFT went to __other__ before it was in)."""
    return {s.labels["lora_name"] for s in metrics.samples if "lora_name" in s.labels
            and s.name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") in BUSIEST} \
        - {"__other__", "__base__", "__unknown__"}


def _agreed(server, timeout: float = 60) -> Metrics:
    """/metrics once the schedulers took the main process's busiest set (at their next snapshot,
    seconds apart at this scale): until then each may hold adapters the other let go."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = Metrics.fetch(server.url)
        if len(_busiest(metrics)) <= TOP or time.monotonic() > deadline:
            return metrics
        time.sleep(1)


def test_every_adapters_requests_are_exact_on_metrics_and_in_prometheus(scraped):
    names, metrics, prometheus, _ = scraped
    finished = metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished")
    assert all(finished.get(name) == 1 for name in names)
    stored = prometheus.query('sglang_lora_requests_total{outcome="finished",lora_name=~"tenant-.*"}')
    assert Counter(r["metric"]["lora_name"] for r in stored if float(r["value"][1]) == 1) == Counter(names)
    assert metrics.total("sglang_lora_adapters_loaded") == ADAPTERS
    assert metrics.total("sglang_lora_telemetry_label_overflow_total") == 0


def test_prometheus_scrapes_no_more_series_than_the_budget(scraped):
    _, _, prometheus, _ = scraped
    [samples] = prometheus.query('scrape_samples_scraped{job="sglang"}')
    ours = prometheus.query('count({__name__=~"sglang_lora_.*"})')
    assert int(float(ours[0]["value"][1])) <= SERIES_LIMIT
    assert int(float(samples["value"][1])) >= int(float(ours[0]["value"][1]))  # SGLang's own series beside ours


def test_each_adapter_keeps_its_budget_and_the_busiest_their_histograms(scraped):
    names, metrics, _, _ = scraped
    ours = [s for s in metrics.samples if s.name.startswith("sglang_lora_") and "lora_name" in s.labels]
    per_adapter = Counter(s.labels["lora_name"] for s in ours)
    busiest = _busiest(metrics)
    assert len(busiest) <= TOP
    assert max(per_adapter[name] for name in set(names) - busiest) <= SERIES_PER_ADAPTER
    # every observation is counted: per adapter for the busiest, under __other__ for the rest
    ttft = metrics.by("sglang_lora_time_to_first_token_seconds_count", "lora_name")
    assert sum(v for k, v in ttft.items() if k != "__base__") == ADAPTERS
    loads = metrics.by("sglang_lora_adapter_loads_total", "lora_name", trigger="api", result="success")
    assert sum(loads.values()) == ADAPTERS



def test_the_scrapes_were_rendered_by_one_helper_process_of_the_servers_main_process(scraped):
    """Rendering thousands of adapters' series ran outside the process whose event loop streams the
    tokens, and never fell back to rendering there."""
    _, metrics, _, helpers = scraped
    assert len(helpers) == 1, helpers
    assert metrics.total("sglang_lora_telemetry_errors_total", hook="render_process") == 0
