"""The phases of each request add up to the TTFT its caller measured, with no HTTP server between
them: an in-process ``LoRAEngine`` (run in a child process), streaming, four concurrent callers."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from lora_telemetry.events import PHASES
from tests.sinks.otlp_receiver import Receiver, phases_by_rid

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def run(bed, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("engine_phases") / "ttft.json"
    receiver = Receiver()
    try:
        child = subprocess.run([sys.executable, "-m", "tests.phase_scenario", str(out), str(bed.root), receiver.url],
                               capture_output=True, text=True, timeout=600)
        assert child.returncode == 0 and out.exists(), child.stdout[-3000:] + child.stderr[-5000:]
    finally:
        receiver.close()
    return json.loads(out.read_text()), phases_by_rid(receiver.spans)


def test_the_phases_add_up_to_the_callers_ttft_within_5_percent_at_the_median(run):
    ttft, phases = run
    assert len(ttft) == 24 and set(ttft) <= set(phases)
    gaps = []
    in_process = [p for p in PHASES if p != "http"]  # no HTTP server received these requests
    for rid, client in ttft.items():
        assert set(in_process) <= set(phases[rid]) and "http" not in phases[rid], phases[rid]
        total = sum(phases[rid][p] for p in in_process)
        assert total <= client, (rid, phases[rid], client)
        gaps.append((client - total) / client)
    print(f"the phases leave a median {statistics.median(gaps):.1%} of the caller's TTFT unexplained")
    assert statistics.median(gaps) <= 0.05, sorted(gaps)
