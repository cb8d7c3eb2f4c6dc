"""Merge this process's store with the published snapshots and render the text format.

The rendered bytes are cached and rebuilt only when a store or a snapshot changed, and
the rebuild runs in a worker thread, so a scrape costs the event loop a dict lookup and a
copy of bytes, not a render. Counters and histograms of processes that exited are kept
(a scheduler that restarts must not make a counter go backwards within a server's life);
their gauges are dropped, as they describe a process that no longer exists.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any

from lora_telemetry.sinks.prometheus.families import FAMILIES, Family
from lora_telemetry.sinks.prometheus.snapshots import Reader, Snapshot, pid_alive
from lora_telemetry.sinks.prometheus.store import Store

SeriesKey = tuple[tuple[str, ...], tuple[str, ...]]  # label names, label values


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _merge(family: Family, sources: list[tuple[dict[str, str], list[tuple[Any, Any]], bool]]) -> dict[SeriesKey, Any]:
    merged: dict[SeriesKey, Any] = {}
    extra_cache: dict[tuple[tuple[str, str], ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for extra, series, alive in sources:
        if family.type == "gauge" and not alive:
            continue
        key_extra = tuple(sorted(extra.items()))
        names_vals = extra_cache.get(key_extra)
        if names_vals is None:
            names_vals = extra_cache[key_extra] = (
                family.labels + tuple(k for k, _ in key_extra), tuple(v for _, v in key_extra))
        names, extra_values = names_vals
        for labels, value in series:
            key = (names, tuple(labels) + extra_values)
            old = merged.get(key)
            if old is None:
                merged[key] = list(value) if isinstance(value, list) else value
            elif isinstance(value, list):
                merged[key] = [a + b for a, b in zip(old, value, strict=True)]
            elif family.type == "gauge" and family.merge == "max":
                merged[key] = max(old, value)
            else:
                merged[key] = old + value
    return merged


def render_families(sources: list[tuple[dict[str, str], dict[str, list[tuple[Any, Any]]], bool]]) -> bytes:
    """Text exposition of every family from ``(extra labels, families, process alive)`` sources."""
    out: list[str] = []
    for family in FAMILIES:
        merged = _merge(family, [(extra, fams.get(family.name, []), alive) for extra, fams, alive in sources])
        if not merged:
            continue
        name = family.name
        out.append(f"# HELP {name} {family.help}\n# TYPE {name} {family.type}\n")
        if family.type == "histogram":
            bounds = [_number(b) for b in family.buckets] + ["+Inf"]
            for (names, values), counts in sorted(merged.items()):
                prefix = ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))
                sep = "," if prefix else ""
                cumulative = 0
                for bound, count in zip(bounds, counts[:-1], strict=True):
                    cumulative += count
                    out.append(f'{name}_bucket{{{prefix}{sep}le="{bound}"}} {cumulative}\n')
                label_text = "{" + prefix + "}" if prefix else ""
                out.append(f"{name}_count{label_text} {cumulative}\n{name}_sum{label_text} {_number(counts[-1])}\n")
        else:
            for (names, values), value in sorted(merged.items()):
                out.append(f"{name}{_labels(names, values)} {_number(value)}\n")
    return "".join(out).encode()


class Renderer:
    """Our part of ``/metrics``: the local store plus every snapshot in ``state_dir``."""

    def __init__(self, store: Store, state_dir: Path | None) -> None:
        self.store = store
        self.reader = Reader(state_dir) if state_dir else None
        self._lock = threading.Lock()
        self._key: Any = None
        self._bytes = b""

    def _current_key(self) -> Any:
        return (self.store.version, self.reader.signature() if self.reader else ())

    def render(self) -> bytes:
        with self._lock:
            key = self._current_key()
            if key == self._key:
                return self._bytes
            _, local = self.store.copy()
            sources: list[tuple[dict[str, str], dict[str, list[tuple[Any, Any]]], bool]] = [({}, local, True)]
            if self.reader:
                snapshots: list[Snapshot] = self.reader.read(key[1])
                sources += [(s.extra_labels, s.families, pid_alive(s.pid)) for s in snapshots]
            self._bytes = render_families(sources)
            self._key = key
            return self._bytes

    async def render_async(self) -> bytes:
        """Serve the cache if current, else render in a worker thread, off the event loop."""
        if self._key == self._current_key():
            return self._bytes
        return await asyncio.get_running_loop().run_in_executor(None, self.render)
