"""``advise --plan``: the plan that a recording calls for, with the rates it predicts."""

from __future__ import annotations

import json
import subprocess
import sys

from lora_telemetry.capacity.planner import make_plan
from lora_telemetry.capacity.recording import BASE, VERSION_LINE, Batch, Pool, Request, format_record
from lora_telemetry.plan import read

ROUNDS = 40


def _write(path, records) -> None:
    path.write_text("\n".join([VERSION_LINE, *(format_record(r) for r in records)]) + "\n")


def _hot_and_cold(path, slots: int = 3):
    """qa, then two adapters never seen before, over and over: LRU evicts qa each round, since
    two newer adapters always stand between its uses; keeping qa makes every later qa a hit."""
    records = [Pool(0.0, 0, slots, "lru", 1024), Batch(0.0, 0, (BASE,), (0,))]
    t = 0.0
    for i in range(ROUNDS):
        for name in ("qa", f"cold-{i}-a", f"cold-{i}-b"):
            t += 0.01
            records += [Batch(t, 0, (name,), (1,)), Request(t, name, 10, 5)]
    _write(path, records)
    return path


def test_the_plan_keeps_the_adapter_lru_keeps_losing(tmp_path):
    planned = make_plan(_hot_and_cold(tmp_path / "access.log"), None)
    assert planned.recorded.hits == 0 and planned.recorded.misses == 3 * ROUNDS
    assert planned.chosen.hits == ROUNDS - 1  # every qa after its first
    assert planned.plan.priorities == {"qa": 1} and planned.plan.pin == ()  # as good as a pin, and pins nothing
    assert planned.plan.preload[0] == "qa" and len(planned.plan.preload) == 1 + 2 * ROUNDS
    assert planned.plan.predicted["gpu_hit_rate"] == (ROUNDS - 1) / (3 * ROUNDS)


def _two_hot_and_openings(path, openings: int):
    """qa, sql and a new cold adapter, round after round, in a pool of three slots; early on,
    ``openings`` batches of three other adapters meet, each needing every slot: the first evicts
    the base model, and from then on qa, sql and the cold one of the round all fit."""
    records: list = [Pool(0.0, 0, 3, "lru", 1024), Batch(0.0, 0, (BASE,), (0,))]
    t = 0.0
    for i in range(ROUNDS):
        for name in ("qa", "sql", f"cold-{i}"):
            t += 0.01
            records.append(Batch(t, 0, (name,), (1,)))
        if i < openings:
            records.append(Batch(t, 0, (f"x{i}", f"y{i}", f"z{i}"), (1, 1, 1)))
    _write(path, records)
    return path


def test_a_rate_that_rests_on_one_lucky_batch_is_a_range_and_the_plan_does_not_lean_on_it(tmp_path):
    planned = make_plan(_two_hot_and_openings(tmp_path / "access.log", openings=1), None)
    lru = planned.recorded
    # As recorded, LRU keeps qa and sql once the base model is gone; had the three never met, two
    # slots would have held qa, sql and each cold adapter in turn, and every request missed.
    assert lru.openings == 1 and lru.base_kept == 0.0 and lru.low == 0.0 and lru.high == lru.hit_rate > 0.6
    # Pinning both leaves one slot, so the base model must go in any run: the same rate, and sure of it.
    assert planned.plan.pin == ("qa", "sql") and planned.chosen.base_kept is None
    assert planned.chosen.low == planned.chosen.high == planned.chosen.hit_rate
    assert planned.plan.predicted["gpu_hit_rate_range"] == [planned.chosen.low, planned.chosen.high]


def test_with_openings_in_every_stretch_of_the_recording_the_base_models_fate_is_sure(tmp_path):
    planned = make_plan(_two_hot_and_openings(tmp_path / "access.log", openings=ROUNDS // 2), None)
    assert planned.recorded.openings == ROUNDS // 2 and planned.recorded.low == planned.recorded.base_freed
    assert planned.chosen is planned.recorded  # LRU does as well as any pin: nothing to pin


def test_advise_writes_a_plan_servers_read_and_prints_both_rates(tmp_path):
    out = tmp_path / "plan.json"
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", str(_hot_and_cold(
        tmp_path / "access.log")), "--plan", str(out), "--preload", "5"], capture_output=True, text=True,
        env={"COLUMNS": "200", "PATH": ""})
    assert result.returncode == 0, result.stderr
    plan = read(out)
    assert plan.slots == 3 and plan.preload[0] == "qa" and len(plan.preload) == 5
    rate = f"{(ROUNDS - 1) / (3 * ROUNDS):.1%}"
    assert f"gpu hit rate {rate} predicted ({rate} in another run), 0.0% recorded" in result.stdout
    assert json.loads(out.read_text())["predicted"]["recorded_gpu_hit_rate"] == 0.0


def test_a_recording_without_pool_settings_needs_a_slot_budget(tmp_path):
    path = tmp_path / "access.log"
    _write(path, [Batch(0.0, 0, ("qa",), (1,))])
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", str(path), "--plan",
                             str(tmp_path / "plan.json")], capture_output=True, text=True)
    assert result.returncode == 1 and "give --slots" in result.stdout
    assert not (tmp_path / "plan.json").exists()
