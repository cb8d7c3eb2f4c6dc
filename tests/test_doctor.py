"""``lora-telemetry doctor`` reports each hook target, and says which one is missing."""

from __future__ import annotations

import os
import subprocess
import sys

HIDDEN = "sglang.srt.managers.scheduler.Scheduler.can_schedule_lora_req"


def _doctor(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "doctor"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **env}, timeout=300)


def test_doctor_finds_every_target_in_the_pinned_sglang():
    run = _doctor()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sglang 0.5.23" in run.stdout and "missing" not in run.stdout
    assert run.stdout.count("found") >= 14


def test_doctor_names_a_missing_target_and_fails():
    run = _doctor(LORA_TELEMETRY_HIDE_TARGETS=HIDDEN)
    assert run.returncode == 1
    [row] = [line for line in run.stdout.splitlines() if "missing" in line and "scheduler_admission" in line]
    assert HIDDEN in row
    assert "1 hook target(s) missing" in run.stdout


def test_doctor_reports_a_bad_configuration_value():
    run = _doctor(LORA_TELEMETRY_MAX_ADAPTER_LABELS="lots")
    assert run.returncode == 1 and "LORA_TELEMETRY_MAX_ADAPTER_LABELS='lots'" in run.stdout
