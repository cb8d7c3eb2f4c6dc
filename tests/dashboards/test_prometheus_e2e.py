"""Every dashboard query and recording rule returns data from a real Prometheus that scraped a
real server under mixed traffic with evictions; the hit-ratio rule agrees with the raw counters;
promtool finds nothing to say about our series."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lora_telemetry.scrape import Metrics
from tests.conftest import lora_paths, post, running_server
from tests.dashboards.prometheus import RULES, Prometheus, promtool

pytestmark = pytest.mark.server
DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana" / "lora-telemetry.json"
ADAPTERS = ["qa", "sql", "chat", "code", "math", "legal"]
VARIABLES = {"$instance": ".*", "$model": ".*", "$lora_name": ".*", "$__rate_interval": "2m"}


def _substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


@pytest.fixture(scope="module")
def run(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    flags = ["--max-loras-per-batch", "3", *lora_paths(bed, ADAPTERS)]
    with running_server(bed, flags, tmp=tmp) as server, Prometheus(f"127.0.0.1:{server.port}", tmp) as prometheus:
        prometheus.wait_for('sglang_lora_cache_lookups_total{tier="gpu"}', lambda r: len(r) >= 2 * len(ADAPTERS))

        drawing = "LORA_TELEMETRY_DASHBOARD_PNG" in os.environ  # a longer run for the README's picture
        count = 900 if drawing else 90

        def request(i: int) -> int:
            pool = ADAPTERS[:3] if drawing and i > count // 2 else ADAPTERS  # second half: a mix that fits
            name = pool[(i * 7) % len(pool)] if i % 5 else None
            return post(server, "/generate", {"text": f"request {i}", "lora_path": name,
                                              "sampling_params": {"max_new_tokens": 8, "temperature": 0}})[0]

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(request, range(count)))
        assert statuses.count(200) == count
        assert post(server, "/unload_lora_adapter", {"lora_name": "legal"})[0] == 200
        raw = Metrics.fetch(server.url)
        total = raw.total("sglang_lora_cache_lookups_total", tier="gpu")
        prometheus.wait_for('sum(sglang_lora_cache_lookups_total{tier="gpu"})',
                            lambda r: r and float(r[0]["value"][1]) == total)
        prometheus.wait_for("lora_name:sglang_lora_cache_gpu_hit_ratio:rate5m", lambda r: len(r) >= 5, timeout=10)
        prometheus.wait_for("count_over_time(sglang_lora_adapter_unloads_total[1m]) >= 2", bool)  # rate() needs two
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
            exposition = response.read().decode()
        yield prometheus, raw, exposition


def _queries() -> list[tuple[str, str]]:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    return [(f'{p["title"]} [{t["refId"]}]', _substitute(t["expr"])) for p in panels for t in p["targets"]]


# Families whose series exist only after events this run does not cause; their panels' queries must still
# be valid PromQL, and must return data once the server has the family.
EVENTFUL = {"sglang_lora_requests_requeued_total": "a retraction or preemption (tests/hooks/test_requeue.py)",
            "sglang_lora_drain_seconds": "SGLang's drainer (tests/hooks/test_drain.py)",
            "sglang_lora_pool_union_overflows_total": "DP attention, which needs a GPU"}


def test_every_dashboard_query_returns_data(run):
    prometheus, raw, _ = run
    absent = {family for family in EVENTFUL if not any(s.name.startswith(family) for s in raw.samples)}
    queries = []
    for title, expr in _queries():
        if any(family in expr for family in absent):
            prometheus.query(expr)  # valid PromQL (Prometheus answers 400 otherwise), without data in this run
        else:
            queries.append((title, expr))
    # A series first counted near the end of the traffic has one sample until the next scrape (1 s),
    # and rate() needs two: a query is without data only if it stays so after the traffic has ended.
    deadline = time.monotonic() + 20
    while (empty := [title for title, expr in queries if not prometheus.query(expr)]) and \
            time.monotonic() < deadline:
        time.sleep(1)
    assert not empty, f"queries without data: {empty}"


def test_every_recording_rule_returns_data(run):
    prometheus = run[0]
    for record in re.findall(r"- record: (\S+)", RULES.read_text()):
        assert prometheus.query(record), record


def test_gpu_hit_ratio_rule_agrees_with_the_raw_counters(run):
    prometheus, raw, _ = run
    evictions = raw.total("sglang_lora_pool_evictions_total")
    assert evictions > 10  # the traffic made the pool work
    ratios = {r["metric"]["lora_name"]: float(r["value"][1])
              for r in prometheus.query("lora_name:sglang_lora_cache_gpu_hit_ratio:rate5m")}
    for name in ADAPTERS:
        lookups = raw.by("sglang_lora_cache_lookups_total", "result", lora_name=name, tier="gpu")
        expected = lookups["hit"] / (lookups["hit"] + lookups["miss"])
        assert ratios[name] == pytest.approx(expected, abs=1e-9), name


def test_promtool_check_metrics_finds_nothing_in_our_series(run):
    result = promtool("check", "metrics", stdin=run[2])
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "sglang_lora" in line]
    assert not complaints, complaints


def test_dashboard_picture_can_be_drawn_from_the_run(run, tmp_path):
    from tests.dashboards.picture import draw, draw_latency

    out = Path(os.environ.get("LORA_TELEMETRY_DASHBOARD_PNG", tmp_path / "dashboard.png"))
    draw(run[0], out)
    draw_latency(run[0], out.with_name("latency.png"))
    assert out.stat().st_size > 10_000 and out.with_name("latency.png").stat().st_size > 10_000
