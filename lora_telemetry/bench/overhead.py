"""``bench --compare-overhead``: what the plugin costs serving, on the test bed or on any model.

Each run sends the same seeded workload to a server with the plugin off or on
(``LORA_TELEMETRY_ENABLED``), in pairs whose order alternates (off, on, then on, off, ...), after
warm-up runs whose figures are not counted: the first server on a GPU host compiles and caches
Triton kernels that later ones reuse. Each run gets a fresh server, or with ``--side-by-side``
each setting keeps one (see ``servers``), and a warm-up is then a pair. Run-to-run noise is large
on a GPU too, so the report shows each ratio's spread beside the spread between runs of the same
setting: a difference smaller than that noise is not a cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lora_telemetry.bench import traffic
from lora_telemetry.bench.command import workload_from
from lora_telemetry.bench.servers import chosen_adapters, side_by_side, started
from lora_telemetry.bench.workload import schedule
from lora_telemetry.scrape import Metrics

MODES = ("off", "on")


def figures(run: traffic.Run) -> dict:
    ok = [o for o in run.outcomes if o.ok]
    ttfts = [o.ttft for o in ok if o.ttft is not None]
    return {"requests": len(run.outcomes), "succeeded": len(ok),
            "throughput": sum(o.output_tokens for o in ok) / run.duration,
            "ttft_p50": traffic.percentile(ttfts, 0.5), "ttft_p99": traffic.percentile(ttfts, 0.99)}


def covered(run: traffic.Run, before: Metrics, after: Metrics) -> float | None:
    """The share of the client's TTFT sum that the server's phases explain over the run; None with
    the plugin off."""
    split = traffic.ttft_breakdown(run.outcomes)
    family = "sglang_lora_ttft_phase_seconds_sum"
    phases = after.total(family) - before.total(family)
    return phases / split["client_s"] if split and phases else None


def plan(warmups: int, pairs: int, kept: bool = False) -> list[tuple[str, str]]:
    """(label, mode) of each run in order: warm-ups first, then pairs in alternating order. Kept
    servers (side by side) warm up a pair each; fresh ones, one server per warm-up."""
    if kept:
        order = [(f"warm-up {i + 1}", mode) for i in range(warmups) for mode in MODES]
    else:
        order = [(f"warm-up {i + 1}", MODES[i % 2]) for i in range(warmups)]
    for i in range(pairs):
        order += [(f"pair {i + 1}", mode) for mode in (MODES if i % 2 == 0 else MODES[::-1])]
    return order


def ratios(rounds: list[dict]) -> dict[str, list[float]]:
    """on/off of each figure, pair by pair."""
    pairs: dict[str, dict[str, dict]] = {}
    for r in rounds:
        if r["label"].startswith("pair"):
            pairs.setdefault(r["label"], {})[r["mode"]] = r
    complete = [p for p in pairs.values() if len(p) == 2]
    return {key: [p["on"][key] / p["off"][key] for p in complete] for key in ("throughput", "ttft_p50", "ttft_p99")}


def noise(rounds: list[dict]) -> dict[str, float | None]:
    """For each figure, the largest ratio between two counted runs of the same setting, minus 1."""
    out: dict[str, float | None] = {}
    for key in ("throughput", "ttft_p50", "ttft_p99"):
        spreads = []
        for mode in MODES:
            values = [r[key] for r in rounds if r["mode"] == mode and r["label"].startswith("pair")]
            if len(values) > 1:
                spreads.append(max(values) / min(values) - 1)
        out[key] = max(spreads) if spreads else None
    return out


def report(rounds: list[dict], console: Console) -> None:
    table = Table(title="runs, in order (warm-ups not counted)")
    for column in ("run", "plugin", "requests ok", "output tokens/s", "TTFT p50", "TTFT p99"):
        table.add_column(column, justify="left" if column in ("run", "plugin") else "right")
    for r in rounds:
        table.add_row(r["label"], r["mode"], f"{r['succeeded']}/{r['requests']}", f"{r['throughput']:.1f}",
                      f"{r['ttft_p50'] * 1000:.1f} ms", f"{r['ttft_p99'] * 1000:.1f} ms")
    console.print(table)
    by_figure, spread = ratios(rounds), noise(rounds)
    if not by_figure["throughput"]:
        return
    summary = Table(title=f"plugin on / off over {len(by_figure['throughput'])} pairs")
    for column in ("figure", "median", "min", "max", "same setting differed by up to"):
        summary.add_column(column, justify="left" if column == "figure" else "right")
    for key, label in (("throughput", "throughput"), ("ttft_p50", "TTFT p50"), ("ttft_p99", "TTFT p99")):
        values, same = by_figure[key], spread[key]
        summary.add_row(f"{label} on/off", f"{statistics.median(values):.3f}", f"{min(values):.3f}",
                        f"{max(values):.3f}", "-" if same is None else f"{same:.1%}")
    console.print(summary)
    shares = [r["ttft_covered"] for r in rounds if r.get("ttft_covered")]
    if shares:
        console.print(f"the server's TTFT phases explained {min(shares):.1%} to {max(shares):.1%} of the client's "
                      "TTFT in the plugin-on runs")
    console.print("goal: throughput on/off >= 0.99 and TTFT p50 within 2%; a ratio inside the last column's "
                  "noise is no measured cost")


def _env(mode: str) -> dict[str, str]:
    return {"LORA_TELEMETRY_ENABLED": "1" if mode == "on" else "0"}


def _measure(url: str, names: list[str], requests: list) -> tuple[traffic.Run, Metrics, Metrics]:
    before = Metrics.fetch(url)
    measured = traffic.run(traffic.drive(url, names, requests, watch=False))
    after = traffic.settled(url, before, sum(1 for o in measured.outcomes if o.ok))
    if after is None:
        raise RuntimeError(f"{url}/metrics did not answer after the run")
    return measured, before, after


def run(args: argparse.Namespace, console: Console) -> int:
    workload = workload_from(args)
    names = chosen_adapters(args, workload.adapters)
    fractions = side_by_side(args.side_by_side)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    requests = schedule(workload)
    rounds: list[dict] = []
    order = plan(args.warmup_rounds, args.rounds or 3, kept=fractions is not None)
    with contextlib.ExitStack() as kept:
        urls: dict[str, str] = {}
        for mode, fraction in zip(MODES, fractions, strict=True) if fractions else ():
            console.print(f"starting the plugin-{mode} server, kept for every round "
                          f"(--mem-fraction-static {fraction})")
            urls[mode] = kept.enter_context(started(args, names, _env(mode), out / f"server-{mode}.log",
                                                    fraction=fraction))
        for i, (label, mode) in enumerate(order):
            console.print(f"[{i + 1}/{len(order)}] {label}: plugin {mode}")
            with contextlib.ExitStack() as fresh:
                url = urls.get(mode) or fresh.enter_context(
                    started(args, names, _env(mode), out / f"server-{i + 1}-{mode}.log"))
                measured, before, after = _measure(url, names, requests)
            rounds.append({"label": label, "mode": mode, "plugin_attached": "sglang_lora_telemetry_info" in after.types,
                           **figures(measured), "ttft_covered": covered(measured, before, after),
                           "ttft_breakdown": traffic.ttft_breakdown(measured.outcomes),
                           "ttft_phase_s": traffic.phase_sums(before, after)})
            console.print(f"    {rounds[-1]['throughput']:.1f} output tokens/s, TTFT p50 "
                          f"{rounds[-1]['ttft_p50'] * 1000:.1f} ms")
            (out / "overhead.json").write_text(json.dumps({"workload": asdict(workload), "side_by_side": fractions,
                                                           "runs": rounds, "ratios": ratios(rounds),
                                                           "noise": noise(rounds)}, indent=1, default=str))
    report(rounds, console)
    console.print(f"wrote {out / 'overhead.json'}")
    return 0
