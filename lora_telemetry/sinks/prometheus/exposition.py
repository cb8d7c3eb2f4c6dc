"""Merge this process's store with the published snapshots and render the text format.

The rendered bytes are cached and rebuilt only when a store or a snapshot changed, and
the rebuild runs in a worker thread that lets the event loop in every millisecond, so a
scrape costs the event loop a dict lookup and a send of bytes, not a render. Series are
merged by their label text; series and histograms whose values did not change since the last
render reuse their lines (between two scrapes most adapters serve nothing: at 10,000 adapters
formatting every line again was half of a render). Counters and histograms of processes that exited are kept (a counter
must not go backwards within a server's life); their gauges are dropped, as they describe
a process that no longer exists.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from pathlib import Path
from typing import Any

from lora_telemetry.sinks.prometheus.cooperative import UNPACED, Pacer
from lora_telemetry.sinks.prometheus.families import FAMILIES, Family
from lora_telemetry.sinks.prometheus.gc_pause import gc_paused
from lora_telemetry.sinks.prometheus.labels import by_label_text
from lora_telemetry.sinks.prometheus.render_process import RenderProcess
from lora_telemetry.sinks.prometheus.snapshots import Reader, pid_alive
from lora_telemetry.sinks.prometheus.store import Store

logger = logging.getLogger(__name__)
Source = tuple[dict[str, dict[str, Any]], bool]  # family -> label text -> value; process alive
_HISTOGRAM_TEXT: dict[tuple[str, str], tuple[list, str]] = {}
_HISTOGRAM_LIMIT = 1_000_000
_LINE_TEXT: dict[str, dict[str, tuple[Any, str]]] = {}  # family -> label text -> (value, its line)
_LINE_LIMIT = 2_000_000  # lines in all; past it the cache starts over rather than grow without bound
PIECE_LINES = 1000  # about 80 kB of text: under a millisecond to build and encode


def _number(value: float) -> str:
    if type(value) is int:
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _merge(family: Family, sources: list[Source], pacer: Pacer) -> dict[str, Any]:
    present = [series for families, alive in sources
               if (series := families.get(family.name)) and (alive or family.type != "gauge")]
    if len(present) <= 1:
        return present[0] if present else {}
    merged = dict(present[0])
    gauge_max = family.type == "gauge" and family.merge == "max"
    for series in present[1:]:
        for i, (key, value) in enumerate(series.items()):
            if not i & 2047:
                pacer.pause()
            old = merged.get(key)
            if old is None:
                merged[key] = value
            elif isinstance(value, list):
                merged[key] = [a + b for a, b in zip(old, value, strict=True)]
            else:
                merged[key] = max(old, value) if gauge_max else old + value
    return merged


def _histogram_text(name: str, bounds: list[str], labels: str, counts: list) -> str:
    cached = _HISTOGRAM_TEXT.get((name, labels))
    if cached is not None and cached[0] == counts:
        return cached[1]
    prefix = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
    lines = []
    cumulative = 0
    for bound, count in zip(bounds, counts, strict=False):
        cumulative += count
        lines.append(f"{prefix}{bound}{cumulative}\n")
    braces = "{" + labels + "}" if labels else ""
    lines.append(f"{name}_count{braces} {cumulative}\n{name}_sum{braces} {_number(counts[-1])}\n")
    text = "".join(lines)
    if len(_HISTOGRAM_TEXT) >= _HISTOGRAM_LIMIT:
        _HISTOGRAM_TEXT.clear()
    _HISTOGRAM_TEXT[(name, labels)] = (list(counts), text)
    return text


def render_families(sources: list[Source], pacer: Pacer = UNPACED) -> list[bytes]:
    """Text exposition of every family from ``(families by label text, process alive)`` sources,
    in pieces of about ``PIECE_LINES`` lines: megabytes joined or encoded at once would hold the
    interpreter lock for milliseconds; the pieces are sent one after another."""
    pieces: list[bytes] = []
    for family in FAMILIES:
        merged = _merge(family, sources, pacer)
        if not merged:
            continue
        name = family.name
        header = f"# HELP {name} {family.help}\n# TYPE {name} {family.type}\n"
        items = list(merged.items())
        if family.type == "histogram":
            bounds = [f'le="{_number(b)}"}} ' for b in family.buckets] + ['le="+Inf"} ']
            step = max(1, PIECE_LINES // (len(bounds) + 2))
            for at in range(0, len(items), step):
                text = "".join([_histogram_text(name, bounds, labels, counts)
                                for labels, counts in items[at:at + step]])
                pieces.append(((header if at == 0 else "") + text).encode())
                pacer.pause()
            continue
        lines = _LINE_TEXT.setdefault(name, {})
        if sum(map(len, _LINE_TEXT.values())) > _LINE_LIMIT:
            _LINE_TEXT.clear()
            lines = _LINE_TEXT.setdefault(name, {})
        for at in range(0, len(items), PIECE_LINES):
            text = _sample_lines(name, items[at:at + PIECE_LINES], lines)
            pieces.append(((header if at == 0 else "") + text).encode())
            pacer.pause()
    return pieces


def _sample_lines(name: str, items: list[tuple[str, Any]], lines: dict[str, tuple[Any, str]]) -> str:
    """The lines of ``items``; a series whose value did not change since the last render reuses its
    line (most do: a scrape every few seconds sees a tenth of the adapters served in between)."""
    out = []
    known = lines.get
    for labels, value in items:
        cached = known(labels)
        if cached is not None and cached[0] == value:
            out.append(cached[1])
            continue
        number = value if type(value) is int else _number(value)
        line = f"{name}{{{labels}}} {number}\n" if labels else f"{name} {number}\n"
        lines[labels] = (value, line)
        out.append(line)
    return "".join(out)


def local_source(store: Store, pacer: Pacer | None = None) -> dict[str, dict[str, Any]]:
    _, families = store.copy()
    by_name = {f.name: f for f in FAMILIES}
    return {name: by_label_text(by_name[name].labels, series, pacer=pacer) for name, series in families.items()}


class Renderer:
    """Our part of ``/metrics``: the local store plus every snapshot in ``state_dir``. A
    ``cooperative`` renderer lets other threads in every millisecond (:mod:`.cooperative`): the
    one serving SGLang's ``/metrics``, whose event loop must not wait for it. With ``in_helper``,
    the render runs in a process of its own (:mod:`.render_process`); if that fails, here, and the
    failure is counted under ``sglang_lora_telemetry_errors_total{hook="render_process"}``."""

    def __init__(self, store: Store, state_dir: Path | None, cooperative: bool = False,
                 in_helper: bool = False) -> None:
        self.store = store
        self.cooperative = cooperative
        self.reader = Reader(state_dir) if state_dir else None
        self.helper = RenderProcess(state_dir) if in_helper else None
        self._lock = threading.Lock()
        self._key: Any = None
        self._pieces: list[bytes] = []

    def _current_key(self) -> Any:
        return (self.store.version, self.reader.signature() if self.reader else ())

    def render_pieces(self) -> list[bytes]:
        """The exposition in pieces, rebuilt if a store or a snapshot changed."""
        with self._lock, gc_paused():
            key = self._current_key()
            if key == self._key:
                return self._pieces
            pacer = Pacer(self.cooperative)
            self._pieces = self._from_helper(pacer) or self._render_here(key, pacer)
            self._key = key
            return self._pieces

    def _from_helper(self, pacer: Pacer) -> list[bytes] | None:
        if self.helper is None:
            return None
        try:
            return self.helper.render(self.store, pacer)
        except Exception:  # telemetry never fails a scrape: render here, count it, try a new helper next time
            if self.store.get("sglang_lora_telemetry_errors_total", ("render_process",)) is None:
                logger.exception("lora_telemetry: the render process failed; rendering in this process")
            self.store.inc("sglang_lora_telemetry_errors_total", ("render_process",))
            return None

    def _render_here(self, key: Any, pacer: Pacer) -> list[bytes]:
        sources: list[Source] = [(local_source(self.store, pacer), True)]
        if self.reader:
            sources += [(s.families, pid_alive(s.pid)) for s in self.reader.read(key[1], pacer)]
        return render_families(sources, pacer)

    def render(self) -> bytes:
        return b"".join(self.render_pieces())

    async def render_async(self) -> list[bytes]:
        """The pieces, from the cache if current, else rendered in a worker thread, off the event loop."""
        if self._key == self._current_key():
            return self._pieces
        return await asyncio.get_running_loop().run_in_executor(None, self.render_pieces)
