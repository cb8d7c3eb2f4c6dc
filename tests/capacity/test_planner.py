"""``advise --plan``: the plan that a recording calls for, with the rates it predicts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora_telemetry.capacity.planner import make_plan
from lora_telemetry.capacity.recording import BASE, VERSION_LINE, Batch, Copy, Decoding, Pool, Request, format_record
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


BIG_S, SMALL_S = 0.1, 0.001  # seconds per recorded copy: big's weights are a hundred times small's


def _decoding_beside_a_hot_adapter(path):
    """hot's requests come alone; big and small decode together between prefills of hot and of a
    new cold adapter, in a pool of three. Pinning hot leaves two slots, so each cold prefill takes
    one of the decoding pair's and the next decode step copies it back (a reload); every copy is
    timed, big's a hundred times small's."""
    records: list = [Pool(0.0, 0, 3, "lru", 1024), Batch(0.0, 0, (BASE,), (0,))]
    t = 0.0
    for i in range(ROUNDS):
        for adapters, new in [(("hot",), (1,)), (("hot",), (1,)), (("big", "small"), (1, 1)),
                              (("big", "small"), (0, 0)), ((f"cold-{i}",), (1,)), (("big", "small"), (0, 0)),
                              (("hot",), (1,)), (("big", "small"), (0, 0))]:
            t += 0.01
            if any(new) and adapters != ("big", "small"):
                records.append(Decoding(t, 0, ("big", "small") if i or adapters != ("hot",) else ()))
            records.append(Batch(t, 0, adapters, new))
            records += [Copy(t, 0, name, BIG_S if name == "big" else SMALL_S, 100 if name == "big" else 1)
                        for name in adapters]
    _write(path, records)
    return path


def test_plans_are_chosen_by_the_time_their_slot_loads_take_reloads_included(tmp_path):
    planned = make_plan(_decoding_beside_a_hot_adapter(tmp_path / "access.log"), None)
    by_plan = {c.describe(): c for c in planned.considered}
    # Pinning hot alone and raising big beside it hit alike and load alike: each cold prefill evicts
    # one of the decoding pair, copied back at the next decode step. Which one is the difference:
    # LRU's oldest is big (marked first), priority 1 keeps big and reloads small.
    alone, beside = by_plan["pin hot"], by_plan["pin hot; priority 1 for big"]
    assert (alone.hit_rate, alone.slot_loads, alone.reloads) == (beside.hit_rate, beside.slot_loads, beside.reloads)
    assert alone.reloads == ROUNDS
    # hot and big once, small once and at each reload, a cold adapter each round
    assert beside.slot_load_s == pytest.approx(BIG_S + SMALL_S * (1 + (1 + ROUNDS) + ROUNDS))
    assert alone.slot_load_s == pytest.approx(BIG_S * (1 + ROUNDS) + SMALL_S * (1 + 1 + ROUNDS))
    assert planned.chosen is beside and planned.helps
    assert planned.plan.predicted["slot_load_s"] == pytest.approx(beside.slot_load_s)
    assert planned.plan.predicted["recorded_slot_load_s"] == pytest.approx(planned.recorded.slot_load_s)


def test_when_no_plan_saves_slot_load_time_the_advice_says_so_and_keeps_the_policy(tmp_path):
    """Two adapters taking turns in a pool of three: after their first copies every request hits,
    so no pin or priority can save a load."""
    path = tmp_path / "access.log"
    records: list = [Pool(0.0, 0, 3, "lru", 1024), Batch(0.0, 0, (BASE,), (0,))]
    for i in range(ROUNDS):
        name = ("qa", "sql")[i % 2]
        records += [Batch(i / 100, 0, (name,), (1,)), Copy(i / 100, 0, name, SMALL_S, 1)] if i < 2 else \
            [Batch(i / 100, 0, (name,), (1,))]
    _write(path, records)
    out = tmp_path / "plan.json"
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", str(path), "--plan", str(out)],
                            capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "No plan helps" in result.stdout and "SGLang's LRU as recorded (0.002 s)" in result.stdout
    plan = read(out)
    assert (plan.pin, plan.priorities, set(plan.preload)) == ((), {}, {"qa", "sql"})
    assert plan.predicted["slot_loads"] == plan.predicted["recorded_slot_loads"] == 2


def test_a_recording_without_pool_settings_needs_a_slot_budget(tmp_path):
    path = tmp_path / "access.log"
    _write(path, [Batch(0.0, 0, ("qa",), (1,))])
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "advise", str(path), "--plan",
                             str(tmp_path / "plan.json")], capture_output=True, text=True)
    assert result.returncode == 1 and "give --slots" in result.stdout
    assert not (tmp_path / "plan.json").exists()
