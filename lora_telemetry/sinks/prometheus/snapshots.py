"""Scheduler processes publish their store as a snapshot file; the main process reads them.

One JSON file per process in the run's state directory, replaced atomically (write, then
rename) by a daemon thread at most every ``interval`` seconds and only when something
changed, so the scheduler's hot path never touches a file. A reader sees either the old
or the new snapshot, never a torn one.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_telemetry.sinks.prometheus.store import Store

PUBLISH_INTERVAL_S = 0.2


@dataclass
class Snapshot:
    pid: int
    extra_labels: dict[str, str]
    families: dict[str, list[tuple[tuple[str, ...], Any]]]


class Publisher:
    """Writes ``store`` to ``<state_dir>/<pid>.json`` whenever it changed."""

    def __init__(self, store: Store, state_dir: Path, extra_labels: dict[str, str], pid: int | None = None) -> None:
        self.store = store
        self.pid = pid or os.getpid()
        self.path = state_dir / f"{self.pid}.json"
        self.extra_labels = extra_labels
        self._published = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lora-telemetry-publish", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        atexit.register(self.publish)
        return self

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_INTERVAL_S):
            self.publish()

    def publish(self) -> None:
        with self._lock:  # the thread and a synchronous flush must not share the temp file
            version, families = self.store.copy()
            if version == self._published:
                return
            payload = {"pid": self.pid, "extra_labels": self.extra_labels,
                       "families": {name: [[list(k), v] for k, v in series] for name, series in families.items()}}
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                tmp.write_text(json.dumps(payload, separators=(",", ":")))
                os.replace(tmp, self.path)
                self._published = version
            except OSError:
                pass  # the directory went away (server shutting down); nothing to report to


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reader:
    """Reads every snapshot in a state directory, re-parsing only files that changed."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._cache: dict[Path, tuple[tuple[int, int], Snapshot]] = {}

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        try:
            with os.scandir(self.state_dir) as it:
                for entry in it:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        st = entry.stat()
                        entries.append((entry.name, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            pass
        return tuple(sorted(entries))

    def read(self, signature: tuple[tuple[str, int, int], ...]) -> list[Snapshot]:
        snapshots = []
        fresh: dict[Path, tuple[tuple[int, int], Snapshot]] = {}
        for name, mtime, size in signature:
            path = self.state_dir / name
            cached = self._cache.get(path)
            if cached and cached[0] == (mtime, size):
                snapshot = cached[1]
            else:
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                snapshot = Snapshot(
                    pid=int(data["pid"]),
                    extra_labels=dict(data.get("extra_labels", {})),
                    families={n: [(tuple(k), v) for k, v in s] for n, s in data["families"].items()},
                )
            fresh[path] = ((mtime, size), snapshot)
            snapshots.append(snapshot)
        self._cache = fresh
        return snapshots
