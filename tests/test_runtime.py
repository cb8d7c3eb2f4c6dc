"""Per-process roles: one reporting scheduler per DP replica, and who is the main process."""

from __future__ import annotations

import os
import sys
import types

import pytest

from lora_telemetry import runtime
from lora_telemetry.hooks import ranks as rank_state


@pytest.fixture
def parallel(monkeypatch):
    def publish(**ranks: int) -> None:
        module = types.ModuleType("sglang.srt.runtime_context")
        module.get_parallel = lambda: types.SimpleNamespace(**ranks)
        monkeypatch.setitem(sys.modules, "sglang.srt.runtime_context", module)
        rank_state._reporting.clear()
        runtime.reset()

    yield publish
    rank_state._reporting.clear()
    runtime.reset()


@pytest.mark.parametrize(("ranks", "reports"), [
    ({"tp_rank": 0, "pp_rank": 0, "dp_rank": 1}, True),
    ({"tp_rank": 1, "pp_rank": 0, "dp_rank": 1}, False),  # TP ranks 1.. would count the same pool again
    ({"tp_rank": 0, "pp_rank": 1, "dp_rank": 0}, False),
])
def test_only_tp_rank_zero_of_each_replica_reports(parallel, ranks, reports):
    parallel(**ranks)
    assert rank_state.reporting_rank() is reports


def test_scheduler_series_carry_their_dp_rank(parallel):
    parallel(tp_rank=0, pp_rank=0, dp_rank=3)
    rank_state.reporting_rank()
    assert runtime.process_labels() == {"dp_rank": "3"}
    assert runtime.process_info()["tp_rank"] == 0


def test_a_process_that_merely_inherited_the_state_directory_is_a_main_process():
    assert not runtime._spawned_by_run(f"/tmp/lora_telemetry-{os.getppid()}")  # pytest is no mp child
    assert not runtime._spawned_by_run(None)


def _child_view(state_dir: str, queue) -> None:
    queue.put(runtime._spawned_by_run(state_dir))


def test_a_multiprocessing_child_of_the_creator_is_a_child():
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for state_dir, expected in ((f"/tmp/lora_telemetry-{os.getpid()}", True), ("/tmp/lora_telemetry-1", False)):
        child = context.Process(target=_child_view, args=(state_dir, queue))
        child.start()
        assert queue.get(timeout=60) is expected
        child.join()


def test_an_exporter_that_cannot_be_set_up_turns_traces_off_and_nothing_else(monkeypatch, caplog):
    """Seen on a GPU host whose OTLP exporter lacked a package it imports: the rest of the telemetry runs."""
    from lora_telemetry import config
    from lora_telemetry.sinks.traces import TraceSink

    def broken() -> None:
        raise ModuleNotFoundError("No module named 'opentelemetry.exporter.otlp.common'")

    monkeypatch.setattr(runtime, "make_tracer", broken)
    monkeypatch.setenv("LORA_TELEMETRY_TRACES", "on")
    telemetry = runtime.Telemetry(config.read())
    assert not any(isinstance(sink, TraceSink) for sink in telemetry.sinks)
    assert telemetry.prometheus in telemetry.sinks
    assert "traces are off" in caplog.text and "otlp.common" in caplog.text
