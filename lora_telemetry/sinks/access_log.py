"""The access log (``LORA_TELEMETRY_ACCESS_LOG``): pool batches, loads and requests as text lines.

Schedulers write the pool's records (settings, loads, unloads, batches), the tokenizer side
writes finished requests; every process appends to the same file. A hook only hands an event
on and the sink keeps a small record; a thread turns the records into text and appends them
every ``FLUSH_S`` with one ``write`` per chunk of whole lines, so processes never split each
other's lines and no formatting happens on a scheduler's forward path. The file stops growing at
its limit, which is said once: in the file and in our log. The format is documented in
:mod:`lora_telemetry.capacity.recording`.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry.capacity.recording import (
    VERSION_LINE,
    Admission,
    Batch,
    Copy,
    Decoding,
    Load,
    Pool,
    Record,
    Request,
    Unload,
    format_record,
)

logger = logging.getLogger("lora_telemetry")


class BoundedAppender:
    """Appends records to a file as lines, from a thread, up to ``max_bytes`` of file size."""

    FLUSH_S = 0.2

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.records: collections.deque[Record] = collections.deque()
        self.full = False
        if os.fstat(self.fd).st_size == 0:
            os.write(self.fd, (VERSION_LINE + "\n").encode())
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="lora-telemetry-access-log", daemon=True).start()
        atexit.register(self.flush)

    def add(self, record: Record) -> None:
        self.records.append(record)

    def _run(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            chunk = []
            while self.records:
                chunk.append(format_record(self.records.popleft()) + "\n")
            if not chunk or self.full:
                return
            data = "".join(chunk).encode("utf-8")
            try:
                if os.fstat(self.fd).st_size + len(data) > self.max_bytes:
                    self._stop()
                    return
                os.write(self.fd, data)
            except OSError as error:
                self.full = True
                logger.warning("lora_telemetry: access log %s stopped: %s", self.path, error)

    def _stop(self) -> None:
        self.full = True
        note = f"# stopped: the access log reached its limit of {self.max_bytes} bytes\n"
        os.write(self.fd, note.encode())
        logger.warning("lora_telemetry: access log %s reached its limit of %d bytes (LORA_TELEMETRY_ACCESS_LOG_MAX_MB);"
                       " nothing more is recorded", self.path, self.max_bytes)


class AccessLogSink:
    """Renders pool and request events as access-log records; knows nothing about SGLang."""

    def __init__(self, appender: BoundedAppender, dp_rank: Callable[[], int | None]) -> None:
        self.appender, self.dp_rank = appender, dp_rank
        self.pool: ev.PoolSettings | None = None
        self.first_scheduled: dict[str, int] = {}  # requests first scheduled since the last batch
        self.copying: dict[str, int] = {}  # overlapped copies in flight: their bytes, by adapter
        self.handlers = {ev.PoolBatch: self._batch, ev.CacheLookup: self._lookup,
                         ev.Residency: self._residency, ev.RequestFinished: self._request,
                         ev.SlotLoaded: self._slot_loaded, ev.SlotCopied: self._slot_copied,
                         ev.DecodingAdapters: self._decoding}

    def _dp(self) -> int:
        return self.dp_rank() or 0

    def _lookup(self, e: ev.CacheLookup) -> None:
        if e.tier == "gpu" and e.at_admission:
            self.appender.add(Admission(time.time(), self._dp(), e.lora_name))
        elif e.tier == "gpu":
            self.first_scheduled[e.lora_name] = self.first_scheduled.get(e.lora_name, 0) + 1

    def _batch(self, e: ev.PoolBatch) -> None:
        if e.pool != self.pool:
            self.pool = e.pool
            self.appender.add(Pool(e.time, self._dp(), e.pool.slots, e.pool.policy, e.pool.slot_bytes,
                                   dict(e.pool.priorities)))
        counts = tuple(self.first_scheduled.pop(name, 0) for name in e.adapters) if self.first_scheduled else \
            (0,) * len(e.adapters)
        self.appender.add(Batch(e.time, self._dp(), e.adapters, counts))

    def _decoding(self, e: ev.DecodingAdapters) -> None:
        self.appender.add(Decoding(time.time(), self._dp(), e.lora_names))

    def _slot_loaded(self, e: ev.SlotLoaded) -> None:
        if e.seconds is None:
            self.copying[e.lora_name] = e.bytes
        else:
            self.appender.add(Copy(time.time(), self._dp(), e.lora_name, e.seconds, e.bytes))

    def _slot_copied(self, e: ev.SlotCopied) -> None:
        size = self.copying.pop(e.lora_name, 0)
        self.appender.add(Copy(time.time(), self._dp(), e.lora_name, e.seconds, size))

    def _residency(self, e: ev.Residency) -> None:
        if e.tier != "host" or e.memory_only:
            return
        self.appender.add(Load(time.time(), self._dp(), e.lora_name, e.pinned) if e.resident else
                          Unload(time.time(), self._dp(), e.lora_name))

    def _request(self, e: ev.RequestFinished) -> None:
        now = time.time()
        self.appender.add(Request(now - (e.e2e_s or 0.0), e.lora_name, e.prompt_tokens, e.generation_tokens))


def make_access_log(path: Path, max_bytes: int, dp_rank: Callable[[], Any]) -> AccessLogSink | None:
    """The sink, or None (with one warning) when the file cannot be opened: serving goes on."""
    try:
        return AccessLogSink(BoundedAppender(path, max_bytes), dp_rank)
    except OSError as error:
        logger.warning("lora_telemetry: cannot write the access log %s: %s; not recording", path, error)
        return None
