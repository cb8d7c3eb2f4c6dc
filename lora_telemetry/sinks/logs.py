"""Structured event logs: one JSON object per line (or a readable line for people).

Configures structlog for our own logger only (``structlog.wrap_logger``), never
``structlog.configure`` or the standard library's root logger: the host application's and
SGLang's logging stay as they were. Lines are formatted where the event happens and written
by a daemon thread (a slow stderr reader must never hold up a scheduler's forward pass), each
with one ``os.write`` on a file opened for appending, so several processes appending to the
same file never interleave within a line.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from lora_telemetry import events as ev

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
MAX_NAME = 256  # names from clients are logged, but not without bound


class LineWriter:
    """structlog's logger interface: queues each line; a daemon thread writes it with one ``write``.

    Past ``QUEUE_LINES`` waiting lines (a writer that cannot keep up), new lines are dropped
    and counted in ``dropped`` rather than block the caller.
    """

    QUEUE_LINES = 10_000

    def __init__(self, path: Path | None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2
        self.lines: queue.Queue[bytes] = queue.Queue(self.QUEUE_LINES)
        self.dropped = 0
        threading.Thread(target=self._write, name="lora-telemetry-log", daemon=True).start()
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            self.lines.put_nowait((message + "\n").encode("utf-8", "replace"))
        except queue.Full:
            self.dropped += 1

    info = warning = error = debug = msg

    def _write(self) -> None:
        while True:
            line = self.lines.get()
            try:
                os.write(self.fd, line)
            except OSError:
                pass  # nowhere to write to; the events still reach metrics and traces
            finally:
                self.lines.task_done()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until every queued line is written, or ``timeout`` seconds (at exit, a stuck
        stderr must not keep the process alive)."""
        deadline = time.monotonic() + timeout
        while self.lines.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)


def _add_trace_ids(logger: Any, method: str, event_dict: dict) -> dict:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span, if there is one."""
    try:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict["trace_id"] = format(context.trace_id, "032x")
            event_dict["span_id"] = format(context.span_id, "016x")
    except ImportError:
        pass
    return event_dict


def make_logger(fmt: str, level: str, writer: LineWriter, process: Callable[[], dict[str, Any]]) -> Any:
    """Our logger; ``process()`` gives the keys that say where a line comes from (read per line,
    since SGLang publishes ranks only after the plugin loaded)."""

    def add_process(logger: Any, method: str, event_dict: dict) -> dict:
        for key, value in process().items():
            event_dict.setdefault(key, value)
        return event_dict

    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return structlog.wrap_logger(
        writer,
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    add_process, _add_trace_ids, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        context_class=dict,
    )


def _name(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[:MAX_NAME] + "..."


class LogSink:
    """Renders the lifecycle, pool and rejection events as log lines; knows nothing about SGLang."""

    def __init__(self, fmt: str, level: str, path: Path | None, process: Callable[[], dict[str, Any]]) -> None:
        self.writer = LineWriter(path)
        self.log = make_logger(fmt, level, self.writer, process)
        self.handlers = {
            ev.AdapterLoaded: self._loaded,
            ev.AdapterUnloaded: self._unloaded,
            ev.SlotLoaded: self._slot_loaded,
            ev.SlotEvicted: self._evicted,
            ev.RequestRejected: self._rejected,
        }

    def _loaded(self, event: ev.AdapterLoaded) -> None:
        if event.success:
            self.log.info("lora.adapter.loaded", lora_name=event.lora_name, trigger=event.trigger,
                          duration_s=round(event.seconds, 6), bytes=event.bytes, pinned=event.pinned)
        else:
            self.log.warning("lora.adapter.load_failed", lora_name=event.lora_name, trigger=event.trigger,
                             duration_s=round(event.seconds, 6), error=event.error)

    def _unloaded(self, event: ev.AdapterUnloaded) -> None:
        self.log.info("lora.adapter.unloaded", lora_name=event.lora_name, reason=event.reason,
                      duration_s=None if event.seconds is None else round(event.seconds, 6))

    def _slot_loaded(self, event: ev.SlotLoaded) -> None:
        reuse = {} if event.since_eviction_s is None else {
            "since_eviction_s": round(event.since_eviction_s, 6), "thrash": event.thrash}
        self.log.info("lora.pool.slot_loaded", lora_name=event.lora_name, slot=event.slot,
                      duration_s=None if event.seconds is None else round(event.seconds, 6), **reuse)

    def _evicted(self, event: ev.SlotEvicted) -> None:
        self.log.info("lora.pool.evicted", lora_name=event.lora_name, slot=event.slot, incoming=event.incoming)

    def _rejected(self, event: ev.RequestRejected) -> None:
        self.log.warning("lora.request.rejected", lora_name=_name(event.requested), error=_name(event.error))
