"""The access-log sink: records from events, whole lines from several processes, a size limit said once."""

from __future__ import annotations

import logging
import multiprocessing

import pytest

from lora_telemetry import config, runtime
from lora_telemetry import events as ev
from lora_telemetry.capacity.recording import Admission, Batch, Copy, Decoding, Load, Pool, Request, Unload, read
from lora_telemetry.sinks.access_log import AccessLogSink, BoundedAppender


def test_events_become_records_with_first_scheduled_requests_on_their_batch(tmp_path):
    path = tmp_path / "access.log"
    appender = BoundedAppender(path, 1 << 20)
    sink = AccessLogSink(appender, lambda: 2)
    pool = ev.PoolSettings(4, "fifo", 1000)
    events = [ev.Residency("qa", "host", True, 10, True), ev.PoolBatch(1.0, ("__base__",), pool),
              ev.CacheLookup("qa", "host", True), ev.CacheLookup("qa", "gpu", False, "r1"),
              ev.CacheLookup("qa", "gpu", False, "r2"), ev.PoolBatch(2.0, ("__base__", "qa"), pool),
              ev.PoolBatch(3.0, ("qa",), pool), ev.Residency("qa", "gpu", False, 10, True),
              ev.Residency("qa", "host", False, 0, True), ev.RequestFinished("qa", "finished", 5, 7, 0.1, 0.5)]
    for event in events:
        handler = sink.handlers.get(type(event))
        if handler is not None:
            handler(event)
    appender.flush()
    records = list(read(path))
    assert [type(r) for r in records] == [Load, Pool, Batch, Batch, Batch, Unload, Request]
    assert records[0].pinned and records[1] == Pool(1.0, 2, 4, "fifo", 1000)
    assert [(r.adapters, r.new_requests) for r in records[2:5]] == [
        (("__base__",), (0,)), (("__base__", "qa"), (0, 2)), (("qa",), (0,))]
    assert (records[6].prompt_tokens, records[6].output_tokens) == (5, 7)


def test_lookups_at_admission_are_records_of_their_own_and_join_no_batch(tmp_path):
    """Overlap loading: a hit prepares no batch, so its lookup cannot wait for one."""
    path = tmp_path / "access.log"
    appender = BoundedAppender(path, 1 << 20)
    sink = AccessLogSink(appender, lambda: 0)
    pool = ev.PoolSettings(4, "lru", 1000)
    events = [ev.PoolBatch(1.0, ("__base__",), pool), ev.CacheLookup("qa", "gpu", False, "r1", at_admission=True),
              ev.PoolBatch(2.0, ("__base__", "qa"), pool), ev.CacheLookup("qa", "gpu", True, "r2", at_admission=True)]
    for event in events:
        sink.handlers[type(event)](event)
    appender.flush()
    records = list(read(path))
    assert [type(r) for r in records] == [Pool, Batch, Admission, Batch, Admission]
    assert [r.name for r in records if isinstance(r, Admission)] == ["qa", "qa"]
    assert records[3].new_requests == (0, 0)


def test_each_slot_load_is_timed_in_a_record_and_an_overlapped_one_when_its_copy_ends(tmp_path):
    """The planner prices slot loads by these: a blocking load is timed at once; an overlapped one
    has its time when the copy is done, and keeps the bytes its start said."""
    path = tmp_path / "access.log"
    appender = BoundedAppender(path, 1 << 20)
    sink = AccessLogSink(appender, lambda: 1)
    for event in (ev.SlotLoaded("qa", 1, 0.026, bytes=4096), ev.SlotLoaded("sql", 2, None, bytes=8192),
                  ev.SlotCopied("sql", 0.033)):
        sink.handlers[type(event)](event)
    appender.flush()
    assert [(r.dp, r.name, r.seconds, r.bytes) for r in read(path)] == [(1, "qa", 0.026, 4096), (1, "sql", 0.033, 8192)]
    assert all(isinstance(r, Copy) for r in read(path))


def test_the_running_batch_before_a_prefill_batch_is_a_record(tmp_path):
    path = tmp_path / "access.log"
    appender = BoundedAppender(path, 1 << 20)
    sink = AccessLogSink(appender, lambda: 0)
    sink.handlers[ev.DecodingAdapters](ev.DecodingAdapters(("legal", "qa")))
    appender.flush()
    [record] = read(path)
    assert isinstance(record, Decoding) and record.names == ("legal", "qa")


def _write_many(path: str, tag: str) -> None:
    appender = BoundedAppender(path, 1 << 30)
    for i in range(20_000):
        appender.add(Request(float(i), f"{tag}-{'x' * (i % 50)}", 1, 2))
    appender.flush()


def test_processes_writing_one_file_never_split_a_line(tmp_path):
    path = tmp_path / "access.log"
    workers = [multiprocessing.get_context("spawn").Process(target=_write_many, args=(str(path), t)) for t in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    records = list(read(path))
    assert len(records) == 40_000 and all(isinstance(r, Request) for r in records)


def test_the_size_limit_stops_the_file_and_says_so_once(tmp_path, caplog):
    path = tmp_path / "access.log"
    appender = BoundedAppender(path, 2_000)
    with caplog.at_level(logging.WARNING, logger="lora_telemetry"):
        for round_ in range(5):
            for i in range(50):
                appender.add(Request(round_ + i / 1000, "qa", 1, 2))
            appender.flush()
    text = path.read_text()
    assert len(text.encode()) <= 2_000 + 100
    assert text.count("# stopped") == 1
    assert sum("reached its limit" in r.getMessage() for r in caplog.records) == 1
    assert all(isinstance(r, Request) for r in read(path))


def test_the_limit_is_a_setting_in_megabytes(monkeypatch):
    monkeypatch.setenv("LORA_TELEMETRY_ACCESS_LOG_MAX_MB", "3")
    assert config.read().access_log_max_bytes == 3 * 2**20
    monkeypatch.setenv("LORA_TELEMETRY_ACCESS_LOG_MAX_MB", "lots")
    with pytest.raises(config.ConfigError, match="ACCESS_LOG_MAX_MB"):
        config.read()


def test_a_log_that_cannot_be_opened_is_reported_and_nothing_else_changes(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LORA_TELEMETRY_ACCESS_LOG", str(tmp_path / "no" / "such" / "dir" / "access.log"))
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "events.log"))
    runtime.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="lora_telemetry"):
            telemetry = runtime.get()
        assert not any(isinstance(sink, AccessLogSink) for sink in telemetry.sinks)
        assert sum("cannot write the access log" in r.getMessage() for r in caplog.records) == 1
        telemetry.emit(ev.RequestFinished("qa", "finished", 1, 2, 0.1, 0.2))  # still counted
        assert telemetry.store.get("sglang_lora_requests_total", ("qa", "finished")) == 1
    finally:
        runtime.reset()
