"""Pin plans: what a valid plan holds, one clear refusal for each way one can be wrong, and the
preloading that follows it (one warning per adapter that cannot be had, the rest loaded)."""

from __future__ import annotations

import json
import logging

import pytest

from lora_telemetry import config
from lora_telemetry.plan import Plan, PlanError, parse, read, read_priorities
from lora_telemetry.preload import Loaded, preload
from lora_telemetry.priorities import PriorityError


def _plan(**fields) -> dict:
    return {"version": 1, "slots": 4, "preload": ["qa", "sql", "chat"], "pin": ["qa"],
            "priorities": {"sql": 1}, **fields}


def test_a_plan_round_trips_through_its_file(tmp_path):
    path = tmp_path / "plan.json"
    plan = Plan(4, ("qa", "sql"), ("qa",), {"sql": 3}, {"gpu_hit_rate": 0.9})
    path.write_text(plan.to_json())
    assert read(path) == plan


@pytest.mark.parametrize(("fields", "problem"), [
    ({"pin": ["qa", "sql", "chat", "code"], "preload": ["qa", "sql", "chat", "code"]},
     "pins 4 adapters but the pool has 4 slots"),
    ({"pin": ["code"]}, "without preloading them"),
    ({"priorities": {"sql": "high"}}, "not an integer"),
    ({"preload": ["qa", "../etc"]}, "path separator"),
    ({"preload": ["qa", "qa"], "pin": []}, "names an adapter twice"),
    ({"slots": 0}, "'slots' must be a positive integer"),
    ({"version": 2}, "this lora_telemetry reads version 1"),
    ({"pins": ["qa"]}, "unknown keys"),
])
def test_a_bad_plan_is_refused_with_the_reason(fields, problem):
    with pytest.raises(PlanError, match=problem):
        parse(_plan(**fields))


def test_a_plan_that_fits_its_own_pool_is_checked_against_the_one_it_meets():
    plan = parse(_plan(pin=["qa", "sql"]))
    plan.check_fits(3)
    with pytest.raises(PlanError, match="pin at most 1"):
        plan.check_fits(2)


def test_files_that_are_not_json_or_missing_are_named(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="bad.json: not JSON"):
        read(tmp_path / "bad.json")
    with pytest.raises(PriorityError, match="cannot read"):
        read_priorities(tmp_path / "missing.json")


def test_configuration_merges_the_plans_priorities_with_the_priorities_file(monkeypatch, tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(_plan()))
    (tmp_path / "priorities.json").write_text(json.dumps({"sql": 7, "code": 2}))
    monkeypatch.setenv("LORA_TELEMETRY_PLAN", str(tmp_path / "plan.json"))
    monkeypatch.setenv("LORA_TELEMETRY_PRIORITIES", str(tmp_path / "priorities.json"))
    monkeypatch.setenv("LORA_TELEMETRY_ADAPTER_DIR", str(tmp_path))
    cfg = config.read()
    assert cfg.plan.pin == ("qa",) and cfg.priorities == {"sql": 7, "code": 2}


def test_a_plan_that_preloads_needs_the_adapter_directory(monkeypatch, tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(_plan()))
    monkeypatch.setenv("LORA_TELEMETRY_PLAN", str(tmp_path / "plan.json"))
    monkeypatch.delenv("LORA_TELEMETRY_ADAPTER_DIR", raising=False)
    with pytest.raises(config.ConfigError, match="set LORA_TELEMETRY_ADAPTER_DIR too"):
        config.read()
    (tmp_path / "plan.json").write_text(json.dumps(_plan(slots="four")))
    with pytest.raises(config.ConfigError, match="LORA_TELEMETRY_PLAN: .*'slots' must be a positive integer"):
        config.read()


def test_preloading_warns_once_per_adapter_it_cannot_have_and_loads_the_rest(caplog):
    plan = parse(_plan(preload=["qa", "sql", "chat", "code", "math"], pin=["qa"]))
    loads = []

    def load(name: str, folder: str, pinned: bool) -> str | None:
        loads.append((name, folder, pinned))
        return "rank 64 is above --max-lora-rank" if name == "chat" else None

    with caplog.at_level(logging.WARNING, logger="lora_telemetry"):
        report = preload(plan, lambda name: None if name == "sql" else f"/adapters/{name}",
                         {"math": Loaded("/elsewhere/math", False)}, load, _no_unload)
    assert loads == [("qa", "/adapters/qa", True), ("chat", "/adapters/chat", False),
                     ("code", "/adapters/code", False)]
    assert report.loaded == ["qa", "code"] and report.missing == ["sql"] and report.already == ["math"]
    assert report.failed == {"chat": "rank 64 is above --max-lora-rank"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "'sql' is not in the adapter directory" in warnings[0]
    assert "'chat' could not be loaded: rank 64" in warnings[1]


def _no_unload(name: str) -> str | None:
    raise AssertionError(f"{name} unloaded")


def test_an_adapter_the_plan_pins_found_loaded_unpinned_is_loaded_again_pinned_from_where_it_came():
    plan = parse(_plan(preload=["qa", "sql", "chat"], pin=["qa", "sql"]))
    calls = []

    def load(name: str, folder: str, pinned: bool) -> str | None:
        calls.append(("load", name, folder, pinned))
        return None

    def unload(name: str) -> str | None:
        calls.append(("unload", name))
        return None

    loaded = {"qa": Loaded("/lora-paths/qa", False), "sql": Loaded("/lora-paths/sql", True),
              "chat": Loaded("/lora-paths/chat", False)}
    report = preload(plan, lambda name: f"/adapters/{name}", loaded, load, unload)
    assert calls == [("unload", "qa"), ("load", "qa", "/lora-paths/qa", True)]  # sql pinned already; chat unpinned
    assert report.repinned == ["qa"] and report.already == ["sql", "chat"] and not report.failed


def test_an_adapter_that_cannot_be_pinned_is_loaded_back_unpinned_with_one_warning(caplog):
    plan = parse(_plan(preload=["qa"], pin=["qa"]))
    calls = []

    def load(name: str, folder: str, pinned: bool) -> str | None:
        calls.append((name, pinned))
        return "no slot left to pin" if pinned else None

    with caplog.at_level(logging.WARNING, logger="lora_telemetry"):
        report = preload(plan, lambda name: None, {"qa": Loaded("/lora-paths/qa", False)}, load, lambda name: None)
    assert calls == [("qa", True), ("qa", False)]  # not lost: served unpinned as before
    assert report.failed == {"qa": "no slot left to pin"} and not report.repinned
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "'qa' was loaded unpinned and could not be pinned: no slot left to pin" in warning


def test_an_adapter_that_cannot_be_loaded_again_at_all_is_said_to_be_gone(caplog):
    plan = parse(_plan(preload=["qa"], pin=["qa"]))
    with caplog.at_level(logging.WARNING, logger="lora_telemetry"):
        report = preload(plan, lambda name: None, {"qa": Loaded("/lora-paths/qa", False)},
                         lambda name, folder, pinned: "the folder is gone", lambda name: None)
    assert report.failed == {"qa": "the folder is gone"}
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and "serving without it" in record.getMessage()


def test_an_adapter_loaded_from_weights_in_memory_is_not_unloaded_to_pin_it(caplog):
    plan = parse(_plan(preload=["qa"], pin=["qa"]))
    with caplog.at_level(logging.WARNING, logger="lora_telemetry"):
        report = preload(plan, lambda name: None, {"qa": Loaded("", False)}, _no_load, _no_unload)
    assert list(report.failed) == ["qa"] and "from weights in memory" in caplog.text


def _no_load(name: str, folder: str, pinned: bool) -> str | None:
    raise AssertionError(f"{name} loaded")


@pytest.mark.parametrize(("kwargs", "error", "problem"), [
    ({"plan": Plan(3, ("a", "b", "c"), ("a", "b", "c")), "max_loras_per_batch": 3}, PlanError, "pin at most 2"),
    ({"plan": Plan(8, tuple("abcdefgh"), tuple("abcdefgh"))}, PlanError, "the pool has 8 slots"),  # SGLang's default
    ({"priorities": {"qa": "high"}}, PriorityError, "not an integer"),
])
def test_lora_engine_refuses_a_bad_plan_or_priorities_before_sglang_starts(monkeypatch, kwargs, error, problem):
    import sglang

    from lora_telemetry import LoRAEngine

    monkeypatch.setattr(sglang, "Engine", lambda *a, **k: pytest.fail("SGLang was started"))
    with pytest.raises(error, match=problem):
        LoRAEngine(**kwargs)
