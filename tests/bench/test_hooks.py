"""The hook benchmark times the hooks' real work: a stand-in that makes a hook fail would time
the failure path and report a figure that means nothing."""

from __future__ import annotations

from lora_telemetry import runtime
from lora_telemetry.bench import hooks
from lora_telemetry.hooks import base, http_server, scheduler
from lora_telemetry.hooks import ranks as rank_state


def test_every_timed_hook_runs_without_failing(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "events.jsonl"))
    monkeypatch.setattr(base, "_failed_once", set())
    try:
        results = hooks.run()
        telemetry = runtime.get()
        telemetry.render_deferred()
        assert base._failed_once == set() and telemetry.sink_errors == 0
        assert any(name.startswith("a scheduler pass: 1,024 running, 5,000 waiting on 64 adapters")
                   for name in results)
        assert http_server.http_arrival.get() == 0.0  # the timed requests' stamps stayed in their own context
    finally:
        rank_state._reporting.clear()
        scheduler._batch_reqs.clear()
        runtime.reset()
