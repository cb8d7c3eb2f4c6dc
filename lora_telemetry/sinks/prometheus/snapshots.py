"""Scheduler processes publish their store as a snapshot file; the main process reads them.

One file per process in the run's state directory, replaced atomically (write, then
rename) by a daemon thread at most every ``PUBLISH_INTERVAL_S`` and only when something
changed, so the scheduler's hot path never touches a file. The thread shares the GIL with the
scheduler's loop: when publishing costs more (thousands of adapters), it publishes less often,
so that it never takes more than ``MAX_CPU_SHARE`` of the time, and it lets the loop in every
millisecond while it works (:mod:`.cooperative`). A reader sees either the old or
the new snapshot, never a torn one. Series are keyed by their rendered label text (this
process's ``dp_rank`` included), so the reader merges and renders without re-formatting.
The format is ``marshal`` (parsed at C speed: 10,000 adapters' series in a few tens of
milliseconds); the files are written and read only by the same interpreter, in a
directory of this server's own. Each family is stored as chunks of at most ``CHUNK`` series,
each marshalled on its own, so that the reader, in SGLang's main process, can let the event
loop in between chunks (:mod:`.cooperative`): no single parse holds the lock for long.
"""

from __future__ import annotations

import atexit
import marshal
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_telemetry.sinks.prometheus.cooperative import UNPACED, Pacer
from lora_telemetry.sinks.prometheus.families import BY_NAME
from lora_telemetry.sinks.prometheus.gc_pause import gc_paused
from lora_telemetry.sinks.prometheus.labels import by_label_text
from lora_telemetry.sinks.prometheus.store import Store

PUBLISH_INTERVAL_S = 0.2
MAX_CPU_SHARE = 0.05
SUFFIX = ".snapshot"
CHUNK = 4096  # series per marshalled chunk: about a millisecond to parse


@dataclass
class Snapshot:
    pid: int
    families: dict[str, dict[str, Any]]  # family -> label text -> value


class Publisher:
    """Writes ``store`` to ``<state_dir>/<pid>.snapshot`` whenever it changed."""

    def __init__(self, store: Store, state_dir: Path, extra_labels: dict[str, str] | Callable[[], dict[str, str]],
                 pid: int | None = None, before_publish: Callable[[], None] | None = None) -> None:
        self.store = store
        self.before_publish = before_publish  # renders deferred events into the store first
        self.pid = pid or os.getpid()
        self.path = state_dir / f"{self.pid}{SUFFIX}"
        # A callable is read at each publish: a scheduler learns its ranks after it started publishing.
        self.extra_labels = extra_labels if callable(extra_labels) else (lambda: extra_labels)
        self._published = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lora-telemetry-publish", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        atexit.register(self.publish)
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        spent = 0.0
        while not self._stop.wait(pause_after(spent)):
            started = time.thread_time()
            self.publish(paced=True)
            spent = time.thread_time() - started

    def publish(self, paced: bool = False) -> None:
        """Write the snapshot if the store changed. ``paced``: from the publishing thread, letting the
        scheduler's loop in every millisecond (:mod:`.cooperative`); a synchronous flush is not."""
        if self.before_publish is not None:
            self.before_publish()
        with self._lock, gc_paused():  # the thread and a synchronous flush must not share the temp file
            version, families = self.store.copy()
            if version == self._published:
                return
            extra = self.extra_labels()
            names, values = tuple(extra), tuple(extra.values())
            pacer = Pacer(paced)
            payload = {"pid": self.pid, "families": {
                name: _chunks(by_label_text(BY_NAME[name].labels + names, series, values, pacer), pacer)
                for name, series in families.items()}}
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                tmp.write_bytes(marshal.dumps(payload))
                os.replace(tmp, self.path)
                self._published = version
            except OSError:
                pass  # the directory went away (server shutting down); nothing to report to


def _chunks(series: dict[str, Any], pacer: Pacer) -> list[bytes]:
    items = list(series.items())
    chunks = []
    for start in range(0, len(items), CHUNK):
        chunks.append(marshal.dumps(dict(items[start:start + CHUNK])))
        pacer.pause()
    return chunks


def pause_after(spent: float) -> float:
    """Seconds to wait after a publish that took ``spent`` seconds of this thread's CPU time."""
    return max(PUBLISH_INTERVAL_S, spent * (1 - MAX_CPU_SHARE) / MAX_CPU_SHARE)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _joined(families: dict[str, list[bytes]], pacer: Pacer) -> dict[str, dict[str, Any]]:
    joined: dict[str, dict[str, Any]] = {}
    for name, chunks in families.items():
        series: dict[str, Any] = {}
        for chunk in chunks:
            series.update(marshal.loads(chunk))
            pacer.pause()
        joined[name] = series
    return joined


class Reader:
    """Reads every snapshot in a state directory, re-parsing only files that changed."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._cache: dict[str, tuple[tuple[int, int], Snapshot]] = {}

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        try:
            with os.scandir(self.state_dir) as it:
                for entry in it:
                    if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                        st = entry.stat()
                        entries.append((entry.name, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            pass
        return tuple(sorted(entries))

    def read(self, signature: tuple[tuple[str, int, int], ...], pacer: Pacer = UNPACED) -> list[Snapshot]:
        snapshots = []
        fresh: dict[str, tuple[tuple[int, int], Snapshot]] = {}
        for name, mtime, size in signature:
            cached = self._cache.get(name)
            if cached and cached[0] == (mtime, size):
                snapshot = cached[1]
            else:
                try:
                    data = marshal.loads((self.state_dir / name).read_bytes())
                    snapshot = Snapshot(pid=int(data["pid"]), families=_joined(data["families"], pacer))
                except (OSError, ValueError, EOFError, TypeError, KeyError):
                    continue
            fresh[name] = ((mtime, size), snapshot)
            snapshots.append(snapshot)
        self._cache = fresh
        return snapshots
