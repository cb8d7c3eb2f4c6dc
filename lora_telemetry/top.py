"""``lora-telemetry top URL``: the hottest adapters of a server, live, from its ``/metrics``.

Every figure is over the last refresh interval (two scrapes apart), as Prometheus's ``rate()``
and ``histogram_quantile()`` would give it, except ``requests``, which counts since the server
started. Where the interval saw nothing for an adapter the cell shows ``-``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lora_telemetry.events import PHASES
from lora_telemetry.scrape import Metrics, histogram_quantile


@dataclass(frozen=True)
class Row:
    adapter: str
    requests_per_s: float
    requests: int
    gpu_hit: float | None
    host_hit: float | None
    ttft_p95: float | None
    slowest_phase: tuple[str, float] | None  # the phase taking the largest share of TTFT, and that share
    thrash: int  # thrash reloads in the interval
    reloads: int  # slot loads in the interval for requests already running (evicted while they decoded)


@dataclass(frozen=True)
class Pool:
    used: int
    slots: int
    evictions_per_s: float
    thrash_share: float | None  # thrash reloads / slot loads in the interval


class Window:
    """Differences between two scrapes: counters and histogram buckets per label value."""

    def __init__(self, before: Metrics, now: Metrics, seconds: float) -> None:
        self.before, self.now, self.seconds = before, now, max(seconds, 1e-9)

    def delta(self, name: str, label: str, **match: str) -> dict[str, float]:
        """Increase per label value; a value that went down (the server restarted) counts from 0."""
        previous = self.before.by(name, label, **match)
        return {key: value - previous.get(key, 0.0) if value >= previous.get(key, 0.0) else value
                for key, value in self.now.by(name, label, **match).items()}

    def buckets(self, histogram: str, label: str, **match: str) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, dict[float, float]] = {}
        for metrics, sign in ((self.now, 1.0), (self.before, -1.0)):
            for sample in metrics.select(histogram + "_bucket", **match):
                per = out.setdefault(sample.labels.get(label, ""), {})
                bound = float(sample.labels["le"])
                per[bound] = per.get(bound, 0.0) + sign * sample.value
        return {key: sorted(per.items()) for key, per in out.items()}


def _ratio(hits: float, total: float) -> float | None:
    return hits / total if total > 0 else None


def rows(window: Window, limit: int = 15) -> list[Row]:
    """The ``limit`` hottest adapters: by request rate in the interval, then by requests served."""
    w = window
    rate = w.delta("sglang_lora_requests_total", "lora_name")
    served = w.now.by("sglang_lora_requests_total", "lora_name")
    lookups = {(tier, result): w.delta("sglang_lora_cache_lookups_total", "lora_name", tier=tier, result=result)
               for tier in ("gpu", "host") for result in ("hit", "miss")}
    ttft = w.buckets("sglang_lora_time_to_first_token_seconds", "lora_name")
    phase_sums = {p: w.delta("sglang_lora_ttft_phase_seconds_sum", "lora_name", phase=p) for p in PHASES}
    phase_counts = {p: w.delta("sglang_lora_ttft_phase_seconds_count", "lora_name", phase=p) for p in PHASES}
    thrash = w.delta("sglang_lora_pool_thrash_reloads_total", "lora_name")
    reloads = w.delta("sglang_lora_pool_slot_reloads_total", "lora_name")
    out = []
    for name in served:
        hits = {tier: (lookups[tier, "hit"].get(name, 0.0), lookups[tier, "miss"].get(name, 0.0))
                for tier in ("gpu", "host")}
        means = {p: phase_sums[p].get(name, 0.0) / phase_counts[p][name]
                 for p in PHASES if phase_counts[p].get(name, 0.0) > 0}
        total = sum(means.values())
        slowest = max(means.items(), key=lambda item: item[1]) if total > 0 else None
        out.append(Row(name, rate.get(name, 0.0) / w.seconds, int(served[name]),
                       _ratio(hits["gpu"][0], sum(hits["gpu"])), _ratio(hits["host"][0], sum(hits["host"])),
                       histogram_quantile(0.95, ttft.get(name, [])),
                       (slowest[0], slowest[1] / total) if slowest else None, int(thrash.get(name, 0.0)),
                       int(reloads.get(name, 0.0))))
    out.sort(key=lambda row: (-row.requests_per_s, -row.requests, row.adapter))
    return out[:limit]


def pool(window: Window) -> Pool:
    w = window
    slots = w.now.by("sglang_lora_pool_slots", "state")
    loads = sum(w.delta("sglang_lora_pool_slot_loads_total", "lora_name").values())
    thrash = sum(w.delta("sglang_lora_pool_thrash_reloads_total", "lora_name").values())
    evictions = sum(w.delta("sglang_lora_pool_evictions_total", "lora_name").values())
    return Pool(int(slots.get("used", 0)), int(slots.get("used", 0) + slots.get("free", 0)),
                evictions / w.seconds, _ratio(thrash, loads))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def table(url: str, window: Window, limit: int, note: str = "") -> Any:
    """A rich renderable: a header line about the pool, then one row per adapter."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    state = pool(window)
    header = Text.assemble(
        (f"{url}", "bold"), f"  {time.strftime('%H:%M:%S')}  over {window.seconds:.1f} s  ",
        f"pool {state.used}/{state.slots} slots  evictions {state.evictions_per_s:.2f}/s  "
        f"thrash {_percent(state.thrash_share)} of slot loads", (f"  {note}" if note else "", "yellow"))
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("adapter", "left"), ("req/s", "right"), ("requests", "right"), ("gpu hit", "right"),
                            ("host hit", "right"), ("TTFT p95", "right"), ("largest phase", "left"),
                            ("thrash", "right"), ("reloads", "right")):
        grid.add_column(column, justify=justify)
    for row in rows(window, limit):
        phase = "-" if row.slowest_phase is None else f"{row.slowest_phase[0]} {row.slowest_phase[1]:.0%}"
        grid.add_row(row.adapter, f"{row.requests_per_s:.2f}", f"{row.requests:,}", _percent(row.gpu_hit),
                     _percent(row.host_hit), _seconds(row.ttft_p95), phase, str(row.thrash), str(row.reloads))
    return Group(header, grid)


def run(url: str, interval: float, limit: int, once: bool, console: Any) -> int:
    """Refresh every ``interval`` seconds until interrupted; ``once``: one interval, one table."""
    from rich.live import Live

    before, taken = Metrics.fetch(url), time.monotonic()  # an unreachable server fails here, with its error
    if once:
        time.sleep(interval)
        now = Metrics.fetch(url)
        console.print(table(url, Window(before, now, time.monotonic() - taken), limit))
        return 0
    try:
        with Live(table(url, Window(before, before, interval), limit, "measuring the first interval"),
                  console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                try:
                    now, at = Metrics.fetch(url), time.monotonic()
                except OSError as error:
                    live.update(table(url, Window(before, before, interval), limit, f"cannot scrape: {error}"))
                    continue
                live.update(table(url, Window(before, now, at - taken), limit))
                before, taken = now, at
    except KeyboardInterrupt:  # Ctrl-C is how one leaves a live view
        return 0
