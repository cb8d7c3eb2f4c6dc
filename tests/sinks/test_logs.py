"""The log sink: our logger only, one line per event, trace ids inside a span, two formats."""

from __future__ import annotations

import json
import logging

import structlog

from lora_telemetry import events as ev
from lora_telemetry.sinks.logs import LogSink


def _process() -> dict:
    return {"process": "tokenizer", "pid": 1, "dp_rank": None, "tp_rank": None}


def test_host_logging_is_left_alone(tmp_path):
    root_handlers, root_level = list(logging.root.handlers), logging.root.level
    before = structlog.get_config()
    sink = LogSink("json", "info", tmp_path / "log.jsonl", _process)
    sink.handlers[ev.SlotEvicted](ev.SlotEvicted("qa", 2))
    assert logging.root.handlers == root_handlers and logging.root.level == root_level
    assert structlog.get_config() == before and not structlog.is_configured()


def test_one_json_object_per_line_with_its_keys(tmp_path):
    path = tmp_path / "log.jsonl"
    sink = LogSink("json", "info", path, _process)
    sink.handlers[ev.AdapterLoaded](ev.AdapterLoaded("qa", "api", False, 0.25, error="bad\nfolder"))
    sink.handlers[ev.RequestRejected](ev.RequestRejected('x"' * 300, "never loaded"))
    sink.writer.flush()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["event"] == "lora.adapter.load_failed" and first["error"] == "bad\nfolder"
    assert first["level"] == "warning" and first["duration_s"] == 0.25 and first["process"] == "tokenizer"
    assert len(second["lora_name"]) < 300  # names from clients are bounded


def test_lines_inside_a_span_carry_its_ids(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    path = tmp_path / "log.jsonl"
    sink = LogSink("json", "info", path, _process)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        sink.handlers[ev.SlotEvicted](ev.SlotEvicted("qa", 1))
    sink.handlers[ev.SlotEvicted](ev.SlotEvicted("qa", 1))
    sink.writer.flush()
    inside, outside = (json.loads(line) for line in path.read_text().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside


def test_console_format_is_for_people_and_level_filters(tmp_path):
    path = tmp_path / "log.txt"
    sink = LogSink("console", "warning", path, _process)
    sink.handlers[ev.SlotEvicted](ev.SlotEvicted("qa", 1))  # info: below the level
    sink.handlers[ev.AdapterLoaded](ev.AdapterLoaded("qa", "api", False, 0.1, error="boom"))
    sink.writer.flush()
    [line] = path.read_text().splitlines()
    assert "lora.adapter.load_failed" in line and "lora_name=qa" in line and not line.startswith("{")


def test_a_writer_that_cannot_keep_up_drops_lines_instead_of_blocking(tmp_path, monkeypatch):
    import os
    import time

    from lora_telemetry.sinks.logs import LineWriter

    monkeypatch.setattr(LineWriter, "QUEUE_LINES", 5)
    read, write = os.pipe()  # nobody reads: the writer thread blocks on a full pipe
    monkeypatch.setattr(os, "open", lambda *a, **k: write)
    sink = LogSink("json", "info", tmp_path / "unused", _process)
    start = time.monotonic()
    for _ in range(20_000):  # far more than the pipe and the queue hold
        sink.handlers[ev.SlotEvicted](ev.SlotEvicted("qa", 1))
    assert time.monotonic() - start < 5 and sink.writer.dropped > 0


def test_lines_are_rendered_on_the_writer_thread_with_the_time_of_the_event(tmp_path):
    """A scheduler's forward path pays for queueing a record; rendering happens on the writer's thread,
    and a line held up there still carries the moment its event happened."""
    import threading
    import time
    from datetime import datetime

    path = tmp_path / "log.jsonl"
    sink = LogSink("json", "info", path, _process)
    rendered_on, render = [], sink.writer.render

    def slow_render(record):
        rendered_on.append(threading.current_thread().name)
        time.sleep(0.3)
        return render(record)

    sink.writer.render = slow_render
    before = time.time()
    sink.handlers[ev.SlotEvicted](ev.SlotEvicted("qa", 1, "sql"))
    sink.handlers[ev.SlotEvicted](ev.SlotEvicted("sql", 2, "qa"))
    after = time.time()
    sink.writer.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert rendered_on == ["lora-telemetry-log", "lora-telemetry-log"]
    assert after - before < 0.3  # the second line was rendered at least 0.3 s after it was logged
    stamps = [datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp() for line in lines]
    assert all(before - 1e-3 <= stamp <= after + 1e-3 for stamp in stamps)
    assert [line["incoming"] for line in lines] == ["sql", "qa"]
