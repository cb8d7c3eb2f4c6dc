"""``lora-telemetry demo``: a real SGLang server on the CPU test bed, mixed-adapter traffic,
and a per-adapter table read back from the server's own ``/metrics``.

The server gets fewer pool slots than adapters, so the table shows the pool at work:
gpu-tier misses, slot loads and evictions next to each adapter's traffic and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lora_telemetry import events as ev
from lora_telemetry import testbed
from lora_telemetry.capacity.analysis import analyse, one_line
from lora_telemetry.capacity.fleet import advise_fleet
from lora_telemetry.scrape import Metrics
from lora_telemetry.testbed.fleet import Fleet
from lora_telemetry.testbed.fleet_command import adapter_flags, serve_until_interrupted, started
from lora_telemetry.testbed.server import TestBedServer

_WORDS = "the adapter pool serves many tenants with one base model select from where order count".split()


@dataclass
class ClientCounts:
    sent: Counter = field(default_factory=Counter)
    succeeded: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)


def popularity(names: list[str]) -> list[float]:
    """Power-law popularity: the i-th name is asked for in proportion to 1/(i+1)."""
    return [1.0 / (i + 1) for i in range(len(names))]


async def _client(http: httpx.AsyncClient, choices: list[str], weights: list[float], rng: random.Random,
                  deadline: float, counts: ClientCounts, on_done: callable, gateway: bool) -> None:
    while time.monotonic() < deadline:
        name = rng.choices(choices, weights)[0]
        prompt = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        max_tokens = rng.randint(8, 24)
        adapter = None if name == ev.BASE else name
        counts.sent[name] += 1
        try:
            if rng.random() < 0.25:
                # A gateway routes by model name, and knows the base model's only: there the adapter
                # goes in lora_path, which SGLang's completions take as well as "model:adapter".
                body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
                if gateway:
                    body |= {"model": testbed.SERVED_MODEL_NAME, "lora_path": adapter}
                else:
                    body["model"] = testbed.SERVED_MODEL_NAME + (f":{adapter}" if adapter else "")
                response = await http.post("/v1/completions", json=body)
            else:
                response = await http.post("/generate", json={
                    "text": prompt, "lora_path": adapter,
                    "sampling_params": {"max_new_tokens": max_tokens, "temperature": 0}})
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        (counts.succeeded if ok else counts.failed)[name] += 1
        on_done()


async def drive(url: str, adapters: list[str], duration: float, concurrency: int, seed: int,
                progress: Progress, gateway: bool = False) -> ClientCounts:
    """Closed-loop mixed traffic from ``concurrency`` clients for ``duration`` seconds."""
    choices = adapters + [ev.BASE]
    weights = popularity(adapters) + [0.3]
    counts = ClientCounts()
    task = progress.add_task("traffic", total=duration, done=0)
    start = time.monotonic()
    deadline = start + duration

    def on_done() -> None:
        progress.update(task, completed=min(duration, time.monotonic() - start),
                        done=sum(counts.succeeded.values()) + sum(counts.failed.values()))

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await asyncio.gather(*(
            _client(http, choices, weights, random.Random(seed * 1000 + i), deadline, counts, on_done, gateway)
            for i in range(concurrency)))
    progress.update(task, completed=duration)
    return counts


def _percent(hits: float, total: float) -> str:
    return f"{100 * hits / total:.0f}%" if total else "-"


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.0f}" if seconds is not None else "-"


def summary_table(counts: ClientCounts, metrics: Metrics, names: list[str]) -> Table:
    table = Table(title="per-adapter telemetry (from /metrics)", title_style="bold")
    for column in ("adapter", "sent", "ok", "failed", "prompt tok", "gen tok", "TTFT p50 ms", "TTFT p95 ms",
                   "e2e p95 ms", "gpu hit", "host hit", "slot loads", "evictions", "host KiB"):
        table.add_column(column, justify="left" if column == "adapter" else "right")
    for name in names:
        lookups = metrics.by("sglang_lora_cache_lookups_total", "result", lora_name=name, tier="gpu")
        host = metrics.by("sglang_lora_cache_lookups_total", "result", lora_name=name, tier="host")
        memory = metrics.total("sglang_lora_adapter_memory_bytes", lora_name=name, tier="host")
        table.add_row(
            name, str(counts.sent[name]), str(counts.succeeded[name]), str(counts.failed[name]),
            f"{metrics.total('sglang_lora_prompt_tokens_total', lora_name=name):.0f}",
            f"{metrics.total('sglang_lora_generation_tokens_total', lora_name=name):.0f}",
            _ms(metrics.quantile("sglang_lora_time_to_first_token_seconds", 0.5, lora_name=name)),
            _ms(metrics.quantile("sglang_lora_time_to_first_token_seconds", 0.95, lora_name=name)),
            _ms(metrics.quantile("sglang_lora_e2e_request_latency_seconds", 0.95, lora_name=name)),
            _percent(lookups.get("hit", 0), sum(lookups.values())),
            _percent(host.get("hit", 0), sum(host.values())) if name != ev.BASE else "-",
            f"{metrics.total('sglang_lora_pool_slot_loads_total', lora_name=name):.0f}",
            f"{metrics.total('sglang_lora_pool_evictions_total', lora_name=name):.0f}",
            f"{memory / 1024:.0f}" if memory else "-",
        )
    return table


DASHBOARDS = Path(__file__).resolve().parent / "dashboards"


def serving_instructions(server: TestBedServer) -> str:
    """How to point Prometheus and Grafana at the demo's server."""
    target = server.url.removeprefix("http://")
    return (
        f"\nserving at {server.url}; metrics at {server.url}/metrics; Ctrl-C stops it\n\n"
        "Prometheus: add this job to prometheus.yml (example with rules: "
        f"{DASHBOARDS / 'prometheus' / 'prometheus.yml'})\n"
        f"  scrape_configs:\n    - job_name: sglang\n      static_configs:\n        - targets: [\"{target}\"]\n"
        f"  rule_files: [\"{DASHBOARDS / 'prometheus' / 'rules.yml'}\"]\n"
        f"Grafana: import {DASHBOARDS / 'grafana' / 'lora-telemetry.json'} (or provision it with "
        f"{DASHBOARDS / 'grafana' / 'provisioning.yml'}) and pick your Prometheus data source"
    )


def _serve_until_interrupted(console: Console, server: TestBedServer) -> None:
    console.print(serving_instructions(server), markup=False, highlight=False)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


def _traffic(url: str, adapters: list[str], args: argparse.Namespace, console: Console,
             gateway: bool = False) -> ClientCounts:
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]} requests"),
                        TimeRemainingColumn(), console=console)
    with progress:
        return asyncio.run(drive(url, adapters, args.duration, args.concurrency, args.seed, progress, gateway))


def _fleet_advice(fleet: Fleet) -> str:
    """Round-robin against adapter-affine routing at the fleet's own size, from its access logs."""
    advice = advise_fleet(fleet.access_logs, counts=[len(fleet.servers)])
    slots = advice.replicas[0].slots or advice.sizes[0]
    n = len(fleet.servers)
    rates = {p: advice.hit_rate(p, n, slots) for p in ("round-robin", "adapter-affine")}
    return (f"at {slots} slots each, adapter-affine routing would give a gpu hit rate of "
            f"{rates['adapter-affine']:.0%} where round-robin gives {rates['round-robin']:.0%} "
            f"(lora-telemetry advise {' '.join(map(str, fleet.access_logs))} for the table)")


def _run_fleet(args: argparse.Namespace, console: Console, root: Path, adapters: list[str], flags: list[str]) -> int:
    fleet = Fleet(root, args.replicas, flags, root / "demo-fleet", args.gateway_policy)
    console.print(f"{args.replicas} replicas behind SMG ({args.gateway_policy}), each with {len(adapters)} adapters "
                  f"and {args.slots} pool slots; logs in {fleet.workdir}")
    with started(fleet, console):
        counts = _traffic(fleet.url, adapters, args, console, gateway=True)
        time.sleep(0.5)  # let the schedulers' last snapshots land
        scrapes = [Metrics.fetch(server.url) for server in fleet.servers]
        console.print(summary_table(counts, Metrics.combined(scrapes), adapters + [ev.BASE]))
        for i, metrics in enumerate(scrapes):
            gpu = metrics.by("sglang_lora_cache_lookups_total", "result", tier="gpu")
            console.print(f"replica {i}: {metrics.total('sglang_lora_requests_total', outcome='finished'):.0f} "
                          f"requests, gpu hit rate {_percent(gpu.get('hit', 0), sum(gpu.values()))}, "
                          f"{metrics.total('sglang_lora_pool_evictions_total'):.0f} evictions")
        console.print(f"advice: {_fleet_advice(fleet)}")
        if args.keep_serving:
            serve_until_interrupted(fleet, console)
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    root = Path(args.dir) if args.dir else testbed.default_root()
    with console.status("making the test bed (once; cached)") as status:
        bed = testbed.make(root, adapters=args.adapters, seed=0, progress=lambda m: status.update(f"making {m}"))
    adapters = list(bed.adapters())
    flags = adapter_flags(bed, args.slots)
    if args.replicas > 1:
        return _run_fleet(args, console, root, adapters, flags)
    recording = root / "demo-access.log"
    recording.unlink(missing_ok=True)
    server = TestBedServer(root, flags, env={"LORA_TELEMETRY_ACCESS_LOG": str(recording)},
                           log_path=root / "demo-server.log")
    console.print(f"{len(adapters)} adapters, {args.slots} pool slots (the base model holds one); "
                  f"server log: {server.log_path}")
    with console.status("starting SGLang on the CPU (about 20 s)"):
        server.start()
    try:
        counts = _traffic(server.url, adapters, args, console)
        time.sleep(0.5)  # let the scheduler's last snapshot land
        metrics = Metrics.fetch(server.url)
        console.print(summary_table(counts, metrics, adapters + [ev.BASE]))
        evictions = metrics.total("sglang_lora_pool_evictions_total")
        console.print(f"pool: {evictions:.0f} evictions, {metrics.total('sglang_lora_pool_slot_loads_total'):.0f} "
                      f"slot loads; {sum(counts.succeeded.values())} requests served")
        console.print(f"advice: {one_line(analyse(recording))} "
                      f"(lora-telemetry advise {recording} for the table and the curve)")
        if args.keep_serving:
            _serve_until_interrupted(console, server)
    finally:
        with console.status("stopping the server"):
            server.stop()
    return 0
