"""``lora-telemetry doctor``: SGLang's version against the supported range, each hook, the series lost
to a missing one, a non-zero exit status when something is missing, and JSON for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lora_telemetry import compat

HIDDEN = "sglang.srt.managers.scheduler.Scheduler.can_schedule_lora_req"


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "doctor", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


def test_doctor_finds_every_target_in_the_installed_sglang():
    run = _doctor()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sglang 0.5.23 (supported 0.5.20 to 0.5.23)" in run.stdout and "MISSING" not in run.stdout
    assert run.stdout.rstrip().endswith("ok")


def test_doctor_names_a_missing_target_with_the_series_lost_and_fails():
    run = _doctor(LORA_TELEMETRY_HIDE_TARGETS=HIDDEN)
    assert run.returncode == 1
    [row] = [line for line in run.stdout.splitlines() if "MISSING" in line]
    assert "scheduler_admission" in row and HIDDEN in row
    assert "problem: hook scheduler_admission is off" in run.stdout and "admission_deferrals_total" in run.stdout


def test_doctor_speaks_json_for_scripts():
    run = _doctor("--json", LORA_TELEMETRY_HIDE_TARGETS=HIDDEN)
    found = json.loads(run.stdout)
    assert run.returncode == 1 and found["ok"] is False
    assert found["sglang"] == "0.5.23" and found["sglang_supported"] is True
    missing = [h for h in found["hooks"] if not h["found"]]
    assert [h["hook"] for h in missing] == ["scheduler_admission"] and missing[0]["loses"]


def test_doctor_reports_a_bad_configuration_value():
    run = _doctor(LORA_TELEMETRY_MAX_ADAPTER_LABELS="lots")
    assert run.returncode == 1 and "LORA_TELEMETRY_MAX_ADAPTER_LABELS='lots'" in run.stdout


def test_supported_range():
    assert [compat.supported(v) for v in ("0.5.19", "0.5.20", "0.5.21.post1", "0.5.23", "0.5.24", "0.6.0", None)] == \
        [False, True, True, True, False, False, False]
