"""``bench --compare-overhead``: what the plugin costs serving, on the test bed or on any model.

Each run starts a fresh server, plugin off or on (``LORA_TELEMETRY_ENABLED``), and sends it the
same seeded workload. Servers are started one at a time, in pairs whose order alternates (off,
on, then on, off, ...), after warm-up servers whose figures are not counted: the first server on
a GPU host compiles and caches Triton kernels that later ones reuse. Run-to-run noise is large
on a GPU too, so the report shows each ratio's spread beside the spread between runs of the same
setting: a difference smaller than that noise is not a cost.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lora_telemetry.bench import traffic
from lora_telemetry.bench.command import embedded_server, workload_from
from lora_telemetry.bench.workload import schedule
from lora_telemetry.scrape import Metrics

MODES = ("off", "on")


def adapters_in(folder: Path) -> dict[str, Path]:
    """Adapter folders (holding an ``adapter_config.json``) in ``folder``, by name."""
    if not folder.is_dir():
        raise ValueError(f"--adapter-dir {folder} is not a directory")
    found = {p.name: p for p in sorted(folder.iterdir()) if (p / "adapter_config.json").is_file()}
    if not found:
        raise ValueError(f"--adapter-dir {folder} holds no adapter folder (one with an adapter_config.json)")
    return found


def model_flags(args: argparse.Namespace, names: list[str]) -> list[str]:
    """SGLang flags for a server of ``args.model`` with the chosen adapters; ``--server-flags`` come last."""
    adapters = adapters_in(args.adapter_dir)
    return ["--model-path", str(args.model), "--enable-lora", "--enable-metrics",
            "--max-loras-per-batch", str(args.slots), "--lora-paths", *(f"{n}={adapters[n]}" for n in names),
            *shlex.split(args.server_flags or "")]


@contextmanager
def started(args: argparse.Namespace, mode: str, names: list[str], log: Path) -> Iterator[str]:
    from lora_telemetry.testbed.server import SGLangServer

    env = {"LORA_TELEMETRY_ENABLED": "1" if mode == "on" else "0"}
    if args.model is None:
        with embedded_server(len(names), args.slots, env=env, extra_flags=shlex.split(args.server_flags or ""),
                             log_path=log) as (url, _names):
            yield url
        return
    server = SGLangServer(model_flags(args, names), log, env=env)
    server.start(timeout=args.start_timeout)
    try:
        server.wait_healthy(args.start_timeout)
        yield server.url
    finally:
        server.stop(timeout=60)


def figures(run: traffic.Run) -> dict:
    ok = [o for o in run.outcomes if o.ok]
    ttfts = [o.ttft for o in ok if o.ttft is not None]
    return {"requests": len(run.outcomes), "succeeded": len(ok),
            "throughput": sum(o.output_tokens for o in ok) / run.duration,
            "ttft_p50": traffic.percentile(ttfts, 0.5), "ttft_p99": traffic.percentile(ttfts, 0.99)}


def covered(run: traffic.Run, metrics: Metrics) -> float | None:
    """The share of the client's TTFT sum that the server's phases explain (a fresh server: its totals
    are the run's); None with the plugin off."""
    split = traffic.ttft_breakdown(run.outcomes)
    phases = metrics.total("sglang_lora_ttft_phase_seconds_sum")
    return phases / split["client_s"] if split and phases else None


def plan(warmups: int, pairs: int) -> list[tuple[str, str]]:
    """(label, mode) of each server in order: warm-ups first, then pairs in alternating order."""
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


def run(args: argparse.Namespace, console: Console) -> int:
    workload = workload_from(args)
    if (args.model is None) != (args.adapter_dir is None):
        raise ValueError("--model and --adapter-dir go together")
    if args.model is None:
        from lora_telemetry.testbed.model import adapter_name

        names = [adapter_name(i) for i in range(workload.adapters)]
    else:
        available = list(adapters_in(args.adapter_dir))
        if len(available) < workload.adapters:
            raise ValueError(f"--adapter-dir holds {len(available)} adapters; --adapters asks for {workload.adapters}")
        names = available[:workload.adapters]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    requests = schedule(workload)
    rounds: list[dict] = []
    order = plan(args.warmup_rounds, args.rounds)
    for i, (label, mode) in enumerate(order):
        console.print(f"[{i + 1}/{len(order)}] {label}: plugin {mode}, starting the server")
        with started(args, mode, names, out / f"server-{i + 1}-{mode}.log") as url:
            measured = traffic.run(traffic.drive(url, names, requests, watch=False))
            time.sleep(1.0)  # the scheduler's last counts land within its 0.2 s publishing interval
            metrics = Metrics.fetch(url)
        rounds.append({"label": label, "mode": mode, "plugin_attached": "sglang_lora_telemetry_info" in metrics.types,
                       **figures(measured), "ttft_covered": covered(measured, metrics)})
        console.print(f"    {rounds[-1]['throughput']:.1f} output tokens/s, TTFT p50 "
                      f"{rounds[-1]['ttft_p50'] * 1000:.1f} ms")
        (out / "overhead.json").write_text(json.dumps({"workload": asdict(workload), "runs": rounds,
                                                       "ratios": ratios(rounds), "noise": noise(rounds)},
                                                      indent=1, default=str))
    report(rounds, console)
    console.print(f"wrote {out / 'overhead.json'}")
    return 0
