"""Structured event logs: one JSON object per line (or a readable line for people).

Uses structlog's renderers, and configures nothing: never ``structlog.configure`` nor the
standard library's root logger, so the host application's and SGLang's logging stay as they
were. An event is logged from a scheduler's forward path (an eviction), so the calling thread
only takes what belongs to the moment (the time, the current span's ids) and queues a record;
a daemon thread renders it into a line and writes it, each line with one ``os.write`` on a file
opened for appending, so several processes appending to the same file never interleave within a
line, and a slow stderr reader never holds up a forward pass.
"""

from __future__ import annotations

import atexit
import functools
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

from lora_telemetry import events as ev

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
MAX_NAME = 256  # names from clients are logged, but not without bound

# What the calling thread queues: level, event name, fields, time.time(), (trace_id, span_id) or None.
Record = tuple[str, str, dict[str, Any], float, "tuple[str, str] | None"]


class LineWriter:
    """Queues records; a daemon thread renders each with ``render`` and writes it with one ``write``.

    Past ``QUEUE_LINES`` waiting records (a writer that cannot keep up), new ones are dropped
    rather than block the caller; they are counted in ``dropped``, as are lines that could not be
    rendered or written.
    """

    QUEUE_LINES = 10_000

    def __init__(self, path: Path | None, render: Callable[[Record], str]) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2
        self.render = render
        self.records: queue.Queue[Record] = queue.Queue(self.QUEUE_LINES)
        self.dropped = 0
        threading.Thread(target=self._write, name="lora-telemetry-log", daemon=True).start()
        atexit.register(self.flush)

    def put(self, record: Record) -> None:
        try:
            self.records.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _write(self) -> None:
        while True:
            record = self.records.get()
            try:
                os.write(self.fd, (self.render(record) + "\n").encode("utf-8", "replace"))
            except Exception:
                self.dropped += 1  # nowhere to write to, or a value that cannot be rendered
            finally:
                self.records.task_done()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until every queued record is written, or ``timeout`` seconds (at exit, a stuck
        stderr must not keep the process alive)."""
        deadline = time.monotonic() + timeout
        while self.records.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)


def _trace_ids() -> tuple[str, str] | None:
    """``trace_id`` and ``span_id`` of the calling thread's current OpenTelemetry span, if any."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def render_line(renderer: Callable[..., str], process: Callable[[], dict[str, Any]], record: Record) -> str:
    """The line structlog's ``renderer`` makes of a record, keyed as structlog's own processors would
    (``level``, an ISO ``timestamp`` in UTC), with the keys ``process()`` gives of where it comes from."""
    level, event, fields, at, ids = record
    event_dict = {"event": event, **fields, "level": level,
                  "timestamp": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")}
    for key, value in process().items():
        event_dict.setdefault(key, value)
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    return renderer(None, level, event_dict)


def _name(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[:MAX_NAME] + "..."


class LogSink:
    """Renders the lifecycle, pool and rejection events as log lines; knows nothing about SGLang.

    ``process()`` gives the keys that say where a line comes from; it is read when the line is
    rendered, since SGLang publishes a scheduler's ranks only after the plugin loaded."""

    def __init__(self, fmt: str, level: str, path: Path | None, process: Callable[[], dict[str, Any]]) -> None:
        renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
        self.threshold = _LEVELS[level]
        self.writer = LineWriter(path, functools.partial(render_line, renderer, process))
        self.handlers = {
            ev.AdapterLoaded: self._loaded,
            ev.AdapterUnloaded: self._unloaded,
            ev.SlotLoaded: self._slot_loaded,
            ev.SlotEvicted: self._evicted,
            ev.RequestRejected: self._rejected,
            ev.PoolOverflow: self._overflow,
            ev.DrainStarted: self._drain_started,
            ev.DrainEnded: self._drain_ended,
        }

    def _log(self, level: str, event: str, **fields: Any) -> None:
        if _LEVELS[level] >= self.threshold:
            self.writer.put((level, event, fields, time.time(), _trace_ids()))

    def _loaded(self, event: ev.AdapterLoaded) -> None:
        if event.success:
            self._log("info", "lora.adapter.loaded", lora_name=event.lora_name, trigger=event.trigger,
                      duration_s=round(event.seconds, 6), bytes=event.bytes, pinned=event.pinned)
        else:
            self._log("warning", "lora.adapter.load_failed", lora_name=event.lora_name, trigger=event.trigger,
                      duration_s=round(event.seconds, 6), error=event.error)

    def _unloaded(self, event: ev.AdapterUnloaded) -> None:
        self._log("info", "lora.adapter.unloaded", lora_name=event.lora_name, reason=event.reason,
                  duration_s=None if event.seconds is None else round(event.seconds, 6))

    def _slot_loaded(self, event: ev.SlotLoaded) -> None:
        reuse = {} if event.since_eviction_s is None else {
            "since_eviction_s": round(event.since_eviction_s, 6), "thrash": event.thrash}
        self._log("info", "lora.pool.slot_loaded", lora_name=event.lora_name, slot=event.slot,
                  duration_s=None if event.seconds is None else round(event.seconds, 6), **reuse)

    def _evicted(self, event: ev.SlotEvicted) -> None:
        self._log("info", "lora.pool.evicted", lora_name=event.lora_name, slot=event.slot, incoming=event.incoming)

    def _drain_started(self, event: ev.DrainStarted) -> None:
        self._log("info", "lora.drain.started", lora_name=event.lora_name, draining_for=event.draining_for)

    def _drain_ended(self, event: ev.DrainEnded) -> None:
        self._log("info", "lora.drain.ended", lora_name=event.lora_name, draining_for=event.draining_for,
                  duration_s=round(event.seconds, 6))

    def _overflow(self, event: ev.PoolOverflow) -> None:
        self._log("error", "lora.pool.union_overflow", local_adapters=event.local_adapters, slots=event.slots,
                  error=event.error)

    def _rejected(self, event: ev.RequestRejected) -> None:
        self._log("warning", "lora.request.rejected", lora_name=_name(event.requested), error=_name(event.error))
