"""Work deferred by a scheduler's hook runs on the publisher thread before the next snapshot."""

from __future__ import annotations

import threading
import time

from lora_telemetry import runtime


def test_deferred_work_runs_off_the_calling_thread_and_before_publishing(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "log"))
    runtime.reset()
    telemetry = runtime.get()
    telemetry.start_publisher()  # as in a scheduler process
    ran: list[str] = []
    telemetry.defer(lambda: ran.append(threading.current_thread().name))
    assert ran == []  # nothing on the calling thread
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ran == ["lora-telemetry-publish"]
    runtime.reset()


def test_the_main_process_runs_it_on_a_thread_of_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "log"))
    runtime.reset()
    ran: list[str] = []
    runtime.defer(lambda: ran.append(threading.current_thread().name))
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ran == ["lora-telemetry-deferred"]
    runtime.reset()
