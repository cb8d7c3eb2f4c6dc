"""Rendering ``/metrics`` in a process of its own, so that SGLang's main process does not.

At 10,000 adapters a render is about 100 ms of Python. In SGLang's main process, even paced
(:mod:`.cooperative`), it took a third of the interpreter from the event loop that streams tokens
for as long as it ran, and a scrape a second raised TTFT p99. Now the main process hands a helper
process a copy of its store, marshalled in chunks of a few thousand series (about 11 ms of C at
10,000 adapters, letting other threads in between chunks), and reads the exposition back from a pipe,
which waits without the interpreter lock. The helper reads the schedulers' snapshots itself and
keeps the render caches (label texts, unchanged lines) from scrape to scrape. Every scrape still
carries the main store as it is at that moment: counts are as fresh and exact as a render in place.

Frames on both pipes are an 8-byte length and a body. A request's body is the marshalled
``(store version, {family: its series marshalled in chunks})``; the answer's is the exposition text. The helper's
side is :mod:`.render_helper`; it exits when its input closes, which happens when the main process exits or
is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from lora_telemetry.sinks.prometheus.cooperative import Pacer
from lora_telemetry.sinks.prometheus.snapshots import CHUNK
from lora_telemetry.sinks.prometheus.store import Store

LENGTH = struct.Struct(">Q")
READ_CHUNK = 1 << 20  # each read is one piece of the response
HELPER_MODULE = "lora_telemetry.sinks.prometheus.render_helper"  # the helper's side, run as a program
PIPE_BYTES = 1 << 20  # the answer's pipe is widened to this (Linux's default limit): 16 times fewer reads
TIMEOUT_S = 30.0  # a helper that hangs is killed, and that scrape rendered in place


class RenderProcess:
    """The main process's end: starts the helper on first use, sends the store, returns the pieces.
    Any failure stops this helper and raises; the caller renders in place and counts it, and the next
    scrape starts a new helper."""

    def __init__(self, state_dir: Path | None) -> None:
        self.command = [sys.executable, "-m", HELPER_MODULE, *([str(state_dir)] if state_dir is not None else [])]
        self._process: subprocess.Popen | None = None
        # family -> (its series as last sent, its chunks then: their items and bytes)
        self._sent: dict[str, tuple[dict, list[tuple[list, bytes]]]] = {}

    def render(self, store: Store, pacer: Pacer) -> list[bytes]:
        process = self._started()
        version, families = store.copy()
        packed = {name: self._packed(name, series, pacer) for name, series in families.items()}
        deadline = time.monotonic() + TIMEOUT_S
        try:
            write_frame(process.stdin, marshal.dumps((version, packed)), deadline)
            return _read_pieces(process.stdout, deadline)
        except (OSError, ValueError, EOFError, struct.error):  # TimeoutError is an OSError
            self.stop()
            raise

    def _packed(self, name: str, series: dict, pacer: Pacer) -> list[bytes]:
        """A family's series marshalled in chunks (one of 20,000 series held the lock for 3 ms). A
        family equal to the one sent last time, and a chunk equal to its last, reuse their bytes:
        comparing is C and cheaper than marshalling, and between two scrapes most adapters serve nothing."""
        last, before = self._sent.get(name, ({}, []))
        if series == last:
            return [data for _, data in before]
        items = list(series.items())
        chunks = []
        for i, start in enumerate(range(0, len(items), CHUNK)):
            chunk = items[start:start + CHUNK]
            if i < len(before) and before[i][0] == chunk:
                chunks.append(before[i])
            else:
                chunks.append((chunk, marshal.dumps(dict(chunk))))
            pacer.pause()
        self._sent[name] = (series, chunks)
        return [data for _, data in chunks]

    def _started(self) -> subprocess.Popen:
        """The helper, started if there is none; one found dead since the last scrape raises (and is
        counted by the caller) once, so that a helper dying again and again shows."""
        if self._process is not None and (code := self._process.poll()) is not None:
            self._process = None
            raise ChildProcessError(f"the render process exited with code {code}")
        if self._process is None:
            self._process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            with contextlib.suppress(OSError, AttributeError):  # a narrower pipe only costs more reads
                fcntl.fcntl(self._process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            os.set_blocking(self._process.stdin.fileno(), False)  # a helper that stops reading cannot hold us
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def write_frame(pipe: Any, body: bytes, deadline: float | None = None) -> None:
    """The length, then ``body``; with a ``deadline`` (``time.monotonic()``, on a non-blocking pipe),
    TimeoutError if the reader does not take it all by then."""
    for part in (LENGTH.pack(len(body)), body):
        view = memoryview(part)
        while view:
            if deadline is not None and not select.select([], [pipe], [], max(0.0, deadline - time.monotonic()))[1]:
                raise TimeoutError("the render process did not take the request in time")
            try:
                view = view[os.write(pipe.fileno(), view):]
            except BlockingIOError:
                continue


def read_exactly(pipe: BinaryIO, size: int, deadline: float | None = None) -> list[bytes]:
    """``size`` bytes in pieces; by ``deadline`` (``time.monotonic()``), else TimeoutError."""
    pieces, left = [], size
    while left:
        if deadline is not None and not select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError("the render process did not answer in time")
        piece = pipe.read(min(left, READ_CHUNK))
        if not piece:
            raise EOFError("the render process closed its output")
        pieces.append(piece)
        left -= len(piece)
    return pieces


def _read_pieces(pipe: Any, deadline: float) -> list[bytes]:
    (size,) = LENGTH.unpack(b"".join(read_exactly(pipe, LENGTH.size, deadline)))
    return read_exactly(pipe, size, deadline)
