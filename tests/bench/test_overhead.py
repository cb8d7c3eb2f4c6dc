"""``bench --compare-overhead``: servers of any model, plugin off and on in alternating pairs."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from lora_telemetry.bench.overhead import noise, plan, ratios
from lora_telemetry.bench.servers import side_by_side
from lora_telemetry.testbed import server_flags


def test_warmups_come_first_and_pairs_alternate_their_order():
    assert plan(1, 3) == [("warm-up 1", "off"), ("pair 1", "off"), ("pair 1", "on"), ("pair 2", "on"),
                          ("pair 2", "off"), ("pair 3", "off"), ("pair 3", "on")]


def test_kept_servers_warm_up_a_pair_each_so_neither_setting_is_measured_cold():
    assert plan(1, 2, kept=True) == [("warm-up 1", "off"), ("warm-up 1", "on"), ("pair 1", "off"), ("pair 1", "on"),
                                     ("pair 2", "on"), ("pair 2", "off")]


def test_side_by_side_takes_two_fractions_and_refuses_anything_else_in_one_line():
    assert side_by_side("0.35,0.8") == (0.35, 0.8)
    assert side_by_side(None) is None
    for bad in ("0.5", "a,b", "0.4,1.2", "0,0.5"):
        with pytest.raises(ValueError, match="--side-by-side"):
            side_by_side(bad)


def test_ratios_are_per_pair_and_noise_compares_runs_of_one_setting():
    def run(label, mode, throughput, p50):
        return {"label": label, "mode": mode, "throughput": throughput, "ttft_p50": p50, "ttft_p99": p50 * 2}

    rounds = [run("warm-up 1", "off", 1.0, 9.0), run("pair 1", "off", 100.0, 0.050), run("pair 1", "on", 99.0, 0.051),
              run("pair 2", "on", 110.0, 0.060), run("pair 2", "off", 100.0, 0.066)]
    assert ratios(rounds)["throughput"] == [0.99, 1.1]
    assert ratios(rounds)["ttft_p50"] == pytest.approx([1.02, 60 / 66])
    assert noise(rounds)["ttft_p50"] == pytest.approx(0.066 / 0.050 - 1)  # off's two runs; warm-up left out


@pytest.mark.server
def test_any_model_folder_is_served_plugin_off_and_on_side_by_side_and_the_report_says_so(bed, tmp_path):
    """The test bed's model and adapters given as any model would be, with the CPU's flags in --server-flags;
    both servers kept up, so the second round of each setting is measured on a server that served before."""
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "bench", "--compare-overhead",
                          "--model", str(bed.model), "--adapter-dir", str(bed.adapter_dir), "--adapters", "3",
                          "--rounds", "2", "--warmup-rounds", "0", "--requests", "12", "--rate", "6",
                          "--output-len", "4:8", "--server-flags", shlex.join(server_flags(bed.root)),
                          "--side-by-side", "0.3,0.3", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "overhead.json").read_text())
    assert [(r["label"], r["mode"], r["succeeded"]) for r in result["runs"]] == [
        ("pair 1", "off", 12), ("pair 1", "on", 12), ("pair 2", "on", 12), ("pair 2", "off", 12)]
    assert "plugin on / off over 2 pairs" in run.stdout
    assert sorted(p.name for p in out.glob("server-*.log")) == ["server-off.log", "server-on.log"]  # two servers
    for log in out.glob("server-*.log"):  # the idle one waits on its socket rather than take a core
        assert "sleep_on_idle': True" in log.read_text()
    assert [r["plugin_attached"] for r in result["runs"]] == [False, True, True, False]  # off really was off
    for r in result["runs"]:  # the phases of this round only, though the server served the round before
        if r["mode"] == "off":
            assert r["ttft_covered"] is None and r["ttft_phase_s"] == {}
            continue
        # The phases after http split up SGLang's own arrival-to-first-chunk, exactly. The client's
        # TTFT also holds its sending and its reading, which anything else on a 2-core machine can
        # stretch (CI once saw the phases explain 0.467 of it), so there only the bound is asserted
        inside = sum(seconds for phase, seconds in r["ttft_phase_s"].items() if phase != "http")
        assert inside == pytest.approx(r["ttft_breakdown"]["in_sglang_s"], rel=0.01), r
        assert 0 < r["ttft_covered"] <= 1.0, r


def test_a_model_without_adapters_is_refused_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "bench", "--compare-overhead",
                          "--model", str(tmp_path), "--adapter-dir", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 2 and "holds no adapter folder" in run.stderr
