"""``lora-telemetry advise``: advice that follows from the recording, a chart, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_telemetry.bench.recording import write_schedule, write_synthetic
from lora_telemetry.bench.workload import Workload, schedule
from lora_telemetry.capacity.analysis import analyse, one_line
from lora_telemetry.capacity.recording import Batch, read
from lora_telemetry.capacity.simulator import PoolSimulator


def _advise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", *args],
                          capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("advise") / "access.log", 20_000, adapters=30, slots=4)


def _exact_rate(path, slots: int, policy: str = "lru") -> float:
    """SGLang's rules replayed at one size (every synthetic batch fits from 5 slots up)."""
    assert slots >= 5
    pool = PoolSimulator(slots, policy).replay(read(path))
    hits = sum(n for name, n in pool.hits.items() if name != "__base__")
    misses = sum(n for name, n in pool.misses.items() if name != "__base__")
    return hits / (hits + misses)


def test_the_advised_slot_count_is_the_smallest_that_reaches_the_target(recording, tmp_path):
    figures = tmp_path / "figures.json"
    result = _advise(str(recording), "--target", "0.8", "--json", str(figures), "--chart", str(tmp_path / "c.png"))
    assert result.returncode == 0, result.stderr
    advised = json.loads(figures.read_text())["advised_slots"]
    assert _exact_rate(recording, advised) >= 0.8 > _exact_rate(recording, advised - 1)
    assert f"--max-loras-per-batch {advised}: gpu hit rate" in result.stdout
    assert "GPU slots (--max-loras-per-batch)" in result.stdout and "Per adapter" in result.stdout
    assert "analysed 20,001 batches in" in result.stdout


def test_the_curve_is_a_png_and_the_figures_cover_every_slot_count(recording, tmp_path):
    figures, png = tmp_path / "figures.json", tmp_path / "curve.png"
    assert _advise(str(recording), "--json", str(figures), "--chart", str(png)).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    data = json.loads(figures.read_text())
    distinct = len(data["slots"]["per_adapter"])
    assert data["slots"]["sizes"] == list(range(2, distinct + 2))
    rates = data["slots"]["hit_rate"]
    assert rates == sorted(rates) and rates[-1] < 1  # LRU never loses by growing; first uses always miss


def test_one_line_advice_names_both_slot_counts(recording):
    line = one_line(analyse(recording), target=0.8)
    assert line.startswith("with ") and "instead of 4" in line and "would rise from" in line


def test_a_corrupt_recording_is_refused_with_its_line_and_partial_reads_the_rest(recording, tmp_path):
    damaged = tmp_path / "damaged.log"
    lines = recording.read_text().splitlines(keepends=True)
    damaged.write_text("".join(lines[:500]) + "B 9.9 0 adapter-0001:zz\n" + "".join(lines[500:]))
    refused = _advise(str(damaged), "--chart", str(tmp_path / "x.png"))
    assert refused.returncode == 1 and "line 501" in refused.stdout and "--partial" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    partial = _advise(str(damaged), "--partial", "--chart", str(tmp_path / "x.png"))
    assert partial.returncode == 0 and "stopped reading at line 501" in partial.stdout
    assert sum(1 for line in lines[:500] if line.startswith("B ")) == analyse(damaged, partial=True).batches


@pytest.mark.parametrize("args, message", [(["--target", "1.5"], "--target must be"),
                                           (["--target", "0"], "--target must be")])
def test_bad_targets_are_refused(recording, args, message):
    result = _advise(str(recording), *args)
    assert result.returncode == 2 and message in result.stdout


def test_a_missing_file_is_refused(tmp_path):
    result = _advise(str(tmp_path / "nowhere.log"))
    assert result.returncode == 1 and "cannot read" in result.stdout


def test_fifo_is_replayed_size_by_size(recording, tmp_path):
    figures = tmp_path / "fifo.json"
    assert _advise(str(recording), "--policy", "fifo", "--json", str(figures), "--chart",
                   str(tmp_path / "f.png")).returncode == 0
    data = json.loads(figures.read_text())
    assert data["policy"] == "fifo"
    for size, rate in zip(data["slots"]["sizes"], data["slots"]["hit_rate"], strict=True):
        if size in (5, 9, 17):
            assert rate == pytest.approx(_exact_rate(recording, size, "fifo"))


def test_a_bench_schedule_is_advised_one_batch_per_request(tmp_path):
    workload = Workload(adapters=6, rate=10, requests=300, seed=3)
    planned = schedule(workload)
    path = write_schedule(tmp_path / "schedule.log", planned, [f"a{i}" for i in range(6)], 1000.0)
    analysis = analyse(path)
    assert analysis.requests == 300 and analysis.batches == 301  # and the one that puts the base model in
    assert sum(analysis.host.requests.values()) == 300
    assert not any(isinstance(r, Batch) for r in read(path))
