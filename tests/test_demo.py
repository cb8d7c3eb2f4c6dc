"""The main job, as a user runs it: the table at the end, and a clean stop also on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from lora_telemetry.capacity.recording import Batch, Request, read
from tests.conftest import interruptible

pytestmark = pytest.mark.server


def _demo(bed, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lora_telemetry.cli", "demo", "--dir", str(bed.root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"}, preexec_fn=interruptible)


def _sglang_processes(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in parent.children(recursive=True) if "sglang" in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []


def test_demo_prints_the_per_adapter_table_and_stops_the_server(bed):
    demo = _demo(bed, "--duration", "8")
    parent = psutil.Process(demo.pid)
    seen: list[psutil.Process] = []
    deadline = time.monotonic() + 240
    while demo.poll() is None and time.monotonic() < deadline:
        seen = _sglang_processes(parent) or seen
        time.sleep(1)
    output = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, output
    assert "per-adapter telemetry" in output
    for name in ("qa", "sql", "__base__"):
        assert any(line.split("│")[1:2] and line.split("│")[1].strip() == name for line in output.splitlines()), name
    assert "evictions" in output
    advice = re.search(r"advice: (with \d+ slots instead of \d+, gpu hit rate would rise from \d+% to \d+%"
                       r"|\d+ slots (are enough|already give the most))", output)
    assert advice, output
    recorded = list(read(bed.root / "demo-access.log"))
    assert sum(isinstance(r, Batch) for r in recorded) > 10 and any(isinstance(r, Request) for r in recorded)
    assert seen and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in seen)


def test_ctrl_c_stops_the_demo_and_its_server(bed):
    demo = _demo(bed, "--duration", "120")
    parent = psutil.Process(demo.pid)
    deadline = time.monotonic() + 180
    servers: list[psutil.Process] = []
    while time.monotonic() < deadline and not any("scheduler" in " ".join(p.cmdline()) for p in servers):
        servers = _sglang_processes(parent)
        time.sleep(1)
    time.sleep(25)  # serving traffic by now
    demo.send_signal(signal.SIGINT)
    output = demo.communicate(timeout=60)[0]
    assert demo.returncode == 130, output
    time.sleep(1)
    assert servers and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers)


def test_keep_serving_says_how_to_point_prometheus_and_grafana_at_it():
    import re
    from pathlib import Path
    from types import SimpleNamespace

    from lora_telemetry.demo import serving_instructions

    text = serving_instructions(SimpleNamespace(url="http://127.0.0.1:31234"))
    assert '- targets: ["127.0.0.1:31234"]' in text and "/metrics" in text
    paths = re.findall(r"(/\S+\.(?:yml|json))", text)
    assert {Path(p).name for p in paths} == {"prometheus.yml", "rules.yml", "lora-telemetry.json", "provisioning.yml"}
    assert all(Path(p).exists() for p in paths)


def test_demo_through_a_fleet_sums_the_replicas_it_served(bed):
    demo = _demo(bed, "--replicas", "2", "--duration", "8")
    output = demo.communicate(timeout=400)[0]
    assert demo.returncode == 0, output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.count("│") > 10]
    table = {row[0]: row for row in rows if row and row[0] != "adapter"}
    sent = sum(int(row[1]) for row in table.values())
    assert sent > 10 and sent == sum(int(row[2]) for row in table.values())  # every request through the gateway ok
    served = [int(n) for n in re.findall(r"replica \d: (\d+) requests", output)]
    assert len(served) == 2 and all(served) and sum(served) == sent, output
    assert re.search(r"advice: at 4 slots each, adapter-affine routing would give a gpu hit rate of \d+% where "
                     r"round-robin gives \d+%", output), output
