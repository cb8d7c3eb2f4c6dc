"""The figures the benchmark commands print."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lora_telemetry.bench import hooks, scrape
from lora_telemetry.sinks.prometheus.snapshots import MAX_CPU_SHARE, PUBLISH_INTERVAL_S, pause_after


def hook_costs(console: Console) -> None:
    table = Table(title="cost of our hooks per call (SGLang's own work excluded)")
    table.add_column("hot path")
    table.add_column("median", justify="right")
    table.add_column("p95", justify="right")
    for name, timing in hooks.run().items():
        table.add_row(name, f"{timing.median * 1e9:,.0f} ns", f"{timing.p95 * 1e9:,.0f} ns")
    console.print(table)
    console.print("budgets: recording one event <= 1 us; per forward batch <= 5 us; a scheduler pass at scale, "
                  "all hooks together, <= 20 us; a logged event (loads, unloads, evictions, rejections: not "
                  "per-batch events) <= 5 us, its line rendered and written on the log's own thread.")


def scrape_costs(console: Console, scales: list[int], churn: float) -> None:
    table = Table(title=f"our series at scale ({churn:.0%} of adapters change between scrapes)")
    for column in ("adapters", "series", "render median", "render p95", "first render", "exposition",
                   "main process CPU per scrape", "event loop's longest wait", "publish median", "scheduler CPU"):
        table.add_column(column, justify="right")
    for adapters in scales:
        with console.status(f"{adapters:,} adapters"):
            cost = scrape.synthetic(adapters, scrapes=10 if adapters >= 10_000 else 20, churn=churn)
        share = cost.publish.median / (cost.publish.median + pause_after(cost.publish.median))
        table.add_row(f"{adapters:,}", f"{cost.series:,}", f"{cost.render.median * 1e3:,.1f} ms",
                      f"{cost.render.p95 * 1e3:,.1f} ms", f"{cost.first_render * 1e3:,.1f} ms",
                      f"{cost.exposition_bytes / 1e6:.1f} MB", f"{cost.main_cpu.median * 1e3:,.1f} ms",
                      f"{cost.loop_wait.median * 1e3:,.1f} ms (p95 {cost.loop_wait.p95 * 1e3:,.1f})",
                      f"{cost.publish.median * 1e3:,.1f} ms", f"{share:.1%}")
    console.print(table)
    console.print("goals: 10,000 adapters at most 170,000 series and 16 MB, render median <= 100 ms "
                  "(prometheus_client's multiprocess files: 14 s). Every adapter has every series its budget "
                  "allows (15), the 50 busiest their histograms too. The render runs in a helper process; main process "
                  "CPU per scrape: what the scrape costs the process whose event loop streams tokens (copying its "
                  "store to the helper, reading the text back). event loop's longest wait: per scrape, how late an "
                  "asyncio loop ticking every 0.5 ms came at worst while that ran beside it, median over scrapes. "
                  "scheduler CPU: the share of a core the publishing thread takes while series change, publishing "
                  f"every {PUBLISH_INTERVAL_S} s or less often when a publish costs more than {MAX_CPU_SHARE:.0%}")


def live_scrape(console: Console, adapters: int, scrapes: int) -> None:
    """Start a test-bed server, give it ``adapters`` adapters that each served a request, time /metrics."""
    from lora_telemetry import testbed
    from lora_telemetry.scrape import Metrics
    from lora_telemetry.testbed.server import TestBedServer

    root = testbed.default_root()
    with console.status("making the test bed"):
        bed = testbed.make(root)
    env = {"LORA_TELEMETRY_MAX_ADAPTER_LABELS": str(max(1000, adapters + 10))}
    with tempfile.TemporaryDirectory() as work, TestBedServer(root, ["--max-loras-per-batch", "8"], env=env,
                                                              log_path=root / "bench-server.log") as server:
        with Progress(console=console) as progress:
            task = progress.add_task(f"loading {adapters:,} adapters, one request each", total=adapters)
            names = scrape.populate(server.url, bed.adapter_dir, adapters, Path(work),
                                    progress=lambda n: progress.advance(task, n))
        metrics = Metrics.fetch(server.url)
        served = metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished")
        exact = all(served.get(name) == 1 for name in names)
        timing, size = scrape.live(server.url, scrapes)
    console.print(f"live GET /metrics with {adapters:,} adapters ({size / 1e6:.1f} MB, SGLang's series included): "
                  f"median {timing.median * 1e3:.1f} ms, p95 {timing.p95 * 1e3:.1f} ms over {scrapes} scrapes; "
                  f"every adapter's request counted exactly once: {exact}")


def scrape_stall(console: Console, adapters: int, rounds: int, seconds: float) -> None:
    """Does scraping stall serving? TTFT p99 of the same workload with and without a scrape
    every second, paired and interleaved, against the noise between identical rounds."""
    import statistics
    import threading

    from lora_telemetry import testbed
    from lora_telemetry.bench import traffic
    from lora_telemetry.bench.workload import Workload, schedule
    from lora_telemetry.testbed.server import TestBedServer

    root = testbed.default_root()
    bed = testbed.make(root)
    names = list(bed.adapters())
    flags = ["--max-loras-per-batch", "4", "--lora-paths", *(f"{n}={p}" for n, p in bed.adapters().items())]
    env = {"LORA_TELEMETRY_MAX_ADAPTER_LABELS": str(adapters + 100)}
    requests = schedule(Workload(adapters=len(names), rate=6, duration=seconds, seed=11, output_len=(8, 16)))

    def p99(url: str, scraping: bool) -> float:
        stop = threading.Event()

        def scraper() -> None:
            while not stop.wait(1.0):
                scrape.live(url, 1)

        thread = threading.Thread(target=scraper, daemon=True)
        if scraping:
            thread.start()
        run = traffic.run(traffic.drive(url, names, requests, watch=False))
        stop.set()
        return traffic.percentile([o.ttft for o in run.outcomes if o.ok and o.ttft is not None], 0.99)

    with tempfile.TemporaryDirectory() as work, TestBedServer(root, flags, env=env,
                                                              log_path=root / "bench-server.log") as server:
        with Progress(console=console) as progress:
            task = progress.add_task(f"loading {adapters:,} adapters, one request each", total=adapters)
            scrape.populate(server.url, bed.adapter_dir, adapters, Path(work),
                            progress=lambda n: progress.advance(task, n))
        timing, size = scrape.live(server.url, 5)
        console.print(f"/metrics with {adapters:,} adapters: {size / 1e6:.1f} MB, median {timing.median * 1e3:.0f} ms")
        effect, noise = [], []
        for round_ in range(rounds):
            with console.status(f"round {round_ + 1}/{rounds}"):
                order = (True, False) if round_ % 2 == 0 else (False, True)
                results = {mode: p99(server.url, mode) for mode in order}
                effect.append(results[True] / results[False])
                first, second = p99(server.url, False), p99(server.url, False)
                noise.append(max(first, second) / min(first, second))
    table = Table(title=f"TTFT p99, scrape every second vs none ({adapters:,} adapters' series, {rounds} pairs)")
    for column in ("", "median", "min", "max"):
        table.add_column(column, justify="right")
    table.add_row("with scrapes / without", *(f"{f(effect):.3f}" for f in (statistics.median, min, max)))
    table.add_row("noise: identical rounds (larger / smaller)",
                  *(f"{f(noise):.3f}" for f in (statistics.median, min, max)))
    console.print(table)


def advise_scale(console: Console, batches: int) -> None:
    """Time ``advise`` and ``advise --plan`` on a synthetic recording of ``batches`` forward batches
    over 100 adapters in a pool of 8 slots."""
    from lora_telemetry.bench.recording import write_synthetic
    from lora_telemetry.capacity.analysis import analyse
    from lora_telemetry.capacity.planner import make_plan

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "synthetic.log"
        with console.status(f"writing a recording of {batches:,} batches"):
            write_synthetic(path, batches)
        size = path.stat().st_size
        with console.status("analysing it"):
            analysis = analyse(path)
        console.print(f"advise: {analysis.batches:,} batches ({size / 2**20:,.0f} MiB), "
                      f"{len(analysis.slots.sizes)} slot counts by LRU stack distances, in {analysis.seconds:.2f} s")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("advise --plan: replaying each candidate plan", total=None)
            start = time.perf_counter()
            planned = make_plan(path, None, progress=lambda: progress.advance(task))
            seconds = time.perf_counter() - start
    console.print(f"advise --plan: {len(planned.considered)} candidate plans for {planned.plan.slots} slots, each "
                  f"replayed 3 times (as recorded, base model kept, base model gone), in {seconds:.1f} s")
