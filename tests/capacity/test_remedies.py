"""SGLang's own remedies in ``advise``, each priced in seconds of slot-load time from the copies the
recording timed: more slots, and overlap loading with what it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lora_telemetry.capacity.analysis import analyse
from lora_telemetry.capacity.command import remedies
from lora_telemetry.capacity.recording import BASE, VERSION_LINE, Admission, Batch, Copy, Pool, Request, format_record

SECONDS, BYTES, ROUNDS = 0.02, 1000, 40


def _cycling(path, adapters: int, slots: int, overlap: bool = False, timed: bool = True):
    """Adapters asked for in turn, one batch each: more adapters than slots, so LRU loads every
    batch's adapter (each load timed at 20 ms in a C record, as the server would write it)."""
    names = [f"a{i}" for i in range(adapters)]
    records = [Pool(0.0, 0, slots, "lru", BYTES), Batch(0.0, 0, (BASE,), (0,))]
    t = 0.0
    for _ in range(ROUNDS):
        for name in names:
            t += 0.05
            records += [Request(t, name, 10, 5), Batch(t, 0, (name,), (1,))]
            records += [Admission(t, 0, name)] if overlap else []
            records += [Copy(t, 0, name, SECONDS, BYTES)] if timed else []
    path.write_text("\n".join([VERSION_LINE, *(format_record(r) for r in records)]) + "\n")
    return path


def test_the_recorded_setting_costs_what_the_copies_took_and_more_slots_save_all_but_first_uses(tmp_path):
    analysis = analyse(_cycling(tmp_path / "access.log", adapters=4, slots=3))
    lines = remedies(analysis, advised=6)
    spent = 4 * ROUNDS * SECONDS  # every batch loaded its adapter, as the C records say
    assert analysis.load_seconds(analysis.index(3)) == pytest.approx(spent)
    assert lines[0].startswith(f"Slot-load time now: {spent:.2f} s")
    assert f"--max-loras-per-batch 6 would save {spent - 4 * SECONDS:.2f} s" in lines[1]  # first uses stay
    assert f"up to {spent:.2f} s leave the forward batches" in lines[2] and "--max-loaded-loras <= 6" in lines[2]
    assert "up to 3.9 KiB" in lines[2]  # the 4 adapters' host copies, pinned
    assert "host hit rate" not in lines[2]  # 4 adapters fit the 6 overlap loading may keep loaded


def test_overlap_loading_names_the_host_tier_it_would_cap_when_traffic_uses_more_adapters(tmp_path):
    analysis = analyse(_cycling(tmp_path / "access.log", adapters=6, slots=2))
    [overlap] = [line for line in remedies(analysis, advised=2) if "overlap" in line]
    assert "this traffic uses 6 adapters, and with 4 loaded its host hit rate would be 0.0%" in overlap


@pytest.mark.parametrize("kind", ["overlap already on", "no copy timed"])
def test_no_remedy_is_priced_without_timed_copies_or_when_the_server_already_overlaps(tmp_path, kind):
    path = _cycling(tmp_path / "access.log", adapters=4, slots=3, overlap=kind == "overlap already on",
                    timed=kind != "no copy timed")
    assert remedies(analyse(path), advised=6) == []


def test_advise_prints_the_remedies_and_the_slot_load_time_per_slot_count(tmp_path):
    path = _cycling(tmp_path / "access.log", adapters=4, slots=3)
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", str(path), "--chart",
                             str(tmp_path / "c.png")], capture_output=True, text=True,
                            env={"COLUMNS": "220", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "slot-load time (the recording's)" in result.stdout and "3.20 s" in result.stdout
    assert "--enable-lora-overlap-loading" in result.stdout
