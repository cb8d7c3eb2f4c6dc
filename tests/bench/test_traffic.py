"""A short bench against the test-bed server: its JSON result agrees with the server's /metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_telemetry.scrape import Metrics
from tests.conftest import lora_paths, running_server

pytestmark = pytest.mark.server
ADAPTERS = ["chat", "code", "qa", "sql"]  # /v1/models order: the bench takes them sorted


@pytest.fixture(scope="module")
def result(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ADAPTERS)], tmp=tmp) as server:
        before = Metrics.fetch(server.url)
        run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "bench", "--url", server.url,
                              "--adapters", "4", "--requests", "60", "--rate", "8", "--seed", "3",
                              "--output-len", "4:12", "--prompt-len", "4:16", "--out", str(tmp / "out"),
                              "--record", str(tmp / "out" / "schedule.log")],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        after = Metrics.fetch(server.url)
    return json.loads((tmp / "out" / "bench-result.json").read_text()), before, after, tmp / "out", run.stdout


def test_every_request_is_accounted_for_on_the_server(result):
    data, before, after, _, _ = result
    adapters = data["summary"]["adapters"]
    assert sum(a["requests"] for a in adapters.values()) == 60 == data["summary"]["succeeded"]
    for name, row in adapters.items():
        served = after.total("sglang_lora_requests_total", lora_name=name, outcome="finished") - \
            before.total("sglang_lora_requests_total", lora_name=name, outcome="finished")
        assert row["server_requests"] == served == row["requests"], name
        assert row["server_output_tokens"] == row["output_tokens"], name


def test_evictions_and_hit_rates_are_deltas_of_the_servers_counters(result):
    data, before, after, _, _ = result
    for name, row in data["summary"]["adapters"].items():
        delta = after.total("sglang_lora_pool_evictions_total", lora_name=name) - \
            before.total("sglang_lora_pool_evictions_total", lora_name=name)
        assert row["evictions"] == delta, name
        assert row["gpu_hit_rate"] is None or 0 <= row["gpu_hit_rate"] <= 1
    assert sum(r["evictions"] for r in data["summary"]["adapters"].values()) > 0  # 4 adapters, 3 slots


def test_requests_follow_the_seeded_schedule(result):
    from lora_telemetry.bench.workload import Workload, schedule

    data = result[0]
    expected = schedule(Workload(adapters=4, requests=60, rate=8, seed=3, output_len=(4, 12), prompt_len=(4, 16)))
    assert [r["scheduled"] for r in data["requests"]] == [r.send_at for r in expected]
    assert [r["output_tokens"] for r in data["requests"]] == [r.output_tokens for r in expected]
    assert [r["adapter"] for r in data["requests"]] == [ADAPTERS[r.adapter] for r in expected]


def test_prints_a_summary_and_writes_the_charts(result):
    out, stdout = result[3], result[4]
    assert "per-adapter results" in stdout and "send time vs schedule" in stdout
    for chart in ("share_vs_hit_rate.png", "ttft_by_adapter.png", "evictions_over_time.png"):
        assert (out / chart).stat().st_size > 5_000


def test_record_writes_the_schedule_as_an_access_log(result):
    from lora_telemetry.bench.workload import Workload, schedule
    from lora_telemetry.capacity.recording import Request, read

    out, stdout = result[3], result[4]
    recorded = list(read(out / "schedule.log"))
    expected = schedule(Workload(adapters=4, requests=60, rate=8, seed=3, output_len=(4, 12), prompt_len=(4, 16)))
    assert all(isinstance(r, Request) for r in recorded) and len(recorded) == 60
    assert [(r.name, r.prompt_tokens, r.output_tokens) for r in recorded] == [
        (ADAPTERS[e.adapter], e.prompt_tokens, e.output_tokens) for e in expected]
    offsets = [r.arrival - recorded[0].arrival for r in recorded]
    assert offsets == pytest.approx([e.send_at for e in expected], abs=2e-3)  # written to the millisecond
    assert "lora-telemetry advise" in stdout


def test_the_ttft_breakdown_adds_up_and_the_servers_phases_explain_sglangs_part(result):
    """The client's TTFT splits by SGLang's wall-clock stamps into three parts that add up to it, and the
    server's phases other than http, summed over the run, are SGLang's arrival-to-first-chunk part."""
    summary, stdout = result[0]["summary"], result[4]
    split, phases = summary["ttft_breakdown"], summary["ttft_phase_s"]
    assert split["requests"] == 60
    parts = split["before_sglang_s"] + split["in_sglang_s"] + split["after_sglang_s"]
    assert parts == pytest.approx(split["client_s"], rel=0.01)
    # The split between before and after rests on SGLang's wall-clock offset, fixed when it started; their
    # sum (the client's TTFT less SGLang's own span) does not.
    assert split["before_sglang_s"] + split["after_sglang_s"] > 0
    assert sum(phases.values()) - phases["http"] == pytest.approx(split["in_sglang_s"], rel=0.01)
    assert "where the client's time to first token went" in stdout
