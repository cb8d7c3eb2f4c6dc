"""lora-telemetry top: its figures over an interval, and its live screen on a real server."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from lora_telemetry.scrape import Metrics
from lora_telemetry.top import Pool, Window, pool, rows
from tests.conftest import generate, interruptible, lora_paths, metrics_when, running_server

BEFORE = """
sglang_lora_requests_total{lora_name="qa",outcome="finished"} 10
sglang_lora_requests_total{lora_name="sql",outcome="finished"} 4
sglang_lora_cache_lookups_total{lora_name="qa",tier="gpu",result="hit"} 8
sglang_lora_cache_lookups_total{lora_name="qa",tier="gpu",result="miss"} 2
sglang_lora_pool_slot_loads_total{lora_name="qa"} 2
sglang_lora_pool_slots{state="used"} 3
sglang_lora_pool_slots{state="free"} 1
"""
NOW = """
sglang_lora_requests_total{lora_name="qa",outcome="finished"} 30
sglang_lora_requests_total{lora_name="sql",outcome="finished"} 4
sglang_lora_requests_total{lora_name="__unknown__",outcome="rejected"} 1
sglang_lora_cache_lookups_total{lora_name="qa",tier="gpu",result="hit"} 23
sglang_lora_cache_lookups_total{lora_name="qa",tier="gpu",result="miss"} 7
sglang_lora_cache_lookups_total{lora_name="qa",tier="host",result="hit"} 20
sglang_lora_pool_slot_loads_total{lora_name="qa"} 7
sglang_lora_pool_slot_reloads_total{lora_name="qa"} 3
sglang_lora_pool_thrash_reloads_total{lora_name="qa"} 4
sglang_lora_pool_evictions_total{lora_name="sql"} 10
sglang_lora_pool_slots{state="used"} 4
sglang_lora_pool_slots{state="free"} 0
sglang_lora_time_to_first_token_seconds_bucket{lora_name="qa",le="0.1"} 10
sglang_lora_time_to_first_token_seconds_bucket{lora_name="qa",le="0.5"} 20
sglang_lora_time_to_first_token_seconds_bucket{lora_name="qa",le="+Inf"} 20
sglang_lora_ttft_phase_seconds_sum{lora_name="qa",phase="queue"} 3.0
sglang_lora_ttft_phase_seconds_count{lora_name="qa",phase="queue"} 20
sglang_lora_ttft_phase_seconds_sum{lora_name="qa",phase="prefill"} 1.0
sglang_lora_ttft_phase_seconds_count{lora_name="qa",phase="prefill"} 20
"""


def test_figures_are_over_the_interval_and_the_hottest_come_first():
    window = Window(Metrics(BEFORE), Metrics(NOW), 10.0)
    qa, unknown, sql = rows(window)  # a new series counts from 0: __unknown__ made 1 request in 10 s
    assert (qa.adapter, qa.requests_per_s, qa.requests, qa.gpu_hit, qa.host_hit) == ("qa", 2.0, 30, 0.75, 1.0)
    assert qa.ttft_p95 == pytest.approx(0.1 + 0.4 * (19 - 10) / 10)  # interpolated in the 0.1-0.5 bucket
    assert qa.slowest_phase == ("queue", pytest.approx(0.75)) and (qa.thrash, qa.reloads) == (4, 3)
    assert (sql.requests_per_s, sql.gpu_hit, sql.ttft_p95, sql.slowest_phase) == (0.0, None, None, None)
    assert (unknown.adapter, unknown.requests, unknown.requests_per_s) == ("__unknown__", 1, 0.1)
    assert [r.adapter for r in rows(window, limit=1)] == ["qa"]
    assert pool(window) == Pool(used=4, slots=4, evictions_per_s=1.0, thrash_share=0.8)


def test_a_server_restart_counts_from_zero_not_below():
    window = Window(Metrics(NOW), Metrics(BEFORE), 10.0)
    assert {r.adapter: r.requests_per_s for r in rows(window)} == {"qa": 1.0, "sql": 0.0}


def test_an_unreachable_server_is_one_line_and_exit_status_2():
    run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "top", "http://127.0.0.1:9", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("error:") and run.stderr.count("\n") == 1, run.stderr


ADAPTERS = ["qa", "sql", "chat", "code"]


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    flags = ["--max-loras-per-batch", "3", *lora_paths(bed, ADAPTERS)]
    with running_server(bed, flags, tmp=tmp_path_factory.mktemp("top")) as server:
        yield server


def _traffic(server, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        generate(server, ADAPTERS[i % len(ADAPTERS)], text=f"top {i}", tokens=2)
        i += 1


def _screen(output: bytes, columns: int, lines: int) -> list[str]:
    import pyte

    screen = pyte.Screen(columns, lines)
    pyte.ByteStream(screen).feed(output)
    return [line.rstrip() for line in screen.display]


@pytest.mark.server
def test_the_live_screen_shows_each_adapter_as_the_server_counts_it(server):
    """Run in a pseudo-terminal under traffic, read the screen as a terminal shows it, leave with Ctrl-C."""
    columns, lines = 120, 30
    controller, terminal = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)}
    process = subprocess.Popen([sys.executable, "-m", "lora_telemetry.cli", "top", server.url, "--interval", "1"],
                               stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True,
                               preexec_fn=interruptible)
    os.close(terminal)
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(server, stop))
    traffic.start()
    output, deadline = b"", time.monotonic() + 8
    while time.monotonic() < deadline:
        if select.select([controller], [], [], 0.2)[0]:
            output += os.read(controller, 65536)
    stop.set()
    traffic.join()
    time.sleep(2.5)  # two more refreshes with the traffic stopped: requests are final
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline and select.select([controller], [], [], 0.2)[0]:
        output += os.read(controller, 65536)
    metrics = metrics_when(server, lambda m: True)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=20) == 0
    os.close(controller)
    screen = _screen(output, columns, lines)
    header = next(i for i, line in enumerate(screen) if line.lstrip().startswith("adapter"))
    shown = {line.split()[0]: line.split() for line in screen[header + 1:] if line.strip()}
    served = metrics.by("sglang_lora_requests_total", "lora_name")
    assert set(ADAPTERS) <= set(shown), screen
    for name in ADAPTERS:
        assert int(shown[name][2].replace(",", "")) == served[name], (name, shown[name], served)
    assert "slots" in screen[header - 1] and server.url in "".join(screen[:header])
