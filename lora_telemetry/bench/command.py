"""``lora-telemetry bench``: traffic against a server, the plugin's overhead, the generator's accuracy."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from lora_telemetry.bench import charts, traffic
from lora_telemetry.bench.recording import write_schedule
from lora_telemetry.bench.workload import Workload, parse_range, schedule


def workload_from(args: argparse.Namespace) -> Workload:
    duration = args.duration if args.requests is None else None
    return Workload(adapters=args.adapters, alpha=args.alpha, rate=args.rate, cv=args.cv, duration=duration,
                    requests=args.requests, prompt_len=parse_range(args.prompt_len, "--prompt-len"),
                    output_len=parse_range(args.output_len, "--output-len"), seed=args.seed)


def server_adapters(url: str) -> list[str]:
    """Adapter names a running server has loaded (its /v1/models lists them with a parent)."""
    with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=10) as response:
        models = json.loads(response.read())["data"]
    return sorted(m["id"] for m in models if m.get("parent"))


@contextlib.contextmanager
def embedded_server(adapters: int, slots: int, env: dict[str, str] | None = None,
                    console: Console | None = None, plan: Path | None = None, extra_flags: list[str] | None = None,
                    log_path: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """A test-bed server with ``adapters`` adapters loaded and ``slots`` pool slots; with a ``plan``,
    the server loads the plan's adapters from the test bed's adapter directory instead. ``extra_flags``
    go to SGLang after ours."""
    from lora_telemetry import testbed
    from lora_telemetry.testbed.server import TestBedServer

    root = testbed.default_root()
    bed = testbed.make(root, adapters=adapters)
    names = list(bed.adapters())[:adapters]
    flags = ["--max-loras-per-batch", str(slots)]
    if plan is None:
        flags += ["--lora-paths", *(f"{n}={bed.adapters()[n]}" for n in names)]
    else:
        env = {**(env or {}), "LORA_TELEMETRY_PLAN": str(plan), "LORA_TELEMETRY_ADAPTER_DIR": str(bed.adapter_dir)}
    server = TestBedServer(root, [*flags, *(extra_flags or [])], env=env,
                           log_path=log_path or root / "bench-server.log")
    status = console.status("starting the test-bed server") if console else contextlib.nullcontext()
    with status:
        server.start()
        server.wait_healthy()  # a plan's adapters are loaded and pinned before traffic starts
    try:
        yield server.url, names
    finally:
        server.stop()


def run_workload(url: str, names: list[str], workload: Workload, console: Console | None) -> traffic.Run:
    requests = schedule(workload)
    if console is None:
        return traffic.run(traffic.drive(url, names, requests))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[line]}"),
                        console=console)
    with progress:
        task = progress.add_task("traffic", total=len(requests), line="")

        def update(sent: int, done: int) -> None:
            progress.update(task, completed=done, line=f"{sent}/{len(requests)} sent, {done} done")

        return traffic.run(traffic.drive(url, names, requests, update))


def _ms(value: float | None) -> str:
    return f"{value * 1000:.0f}" if value is not None else "-"


def _pct(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"


def summary_table(summary: dict) -> Table:
    table = Table(title="per-adapter results (client side; hit rates and evictions from /metrics deltas)")
    for column in ("adapter", "requests", "ok", "tokens/s", "TTFT p50", "p95", "p99", "e2e p95",
                   "gpu hit", "host hit", "evictions"):
        table.add_column(column, justify="left" if column == "adapter" else "right")
    for name, row in sorted(summary["adapters"].items(), key=lambda item: -item[1]["requests"]):
        table.add_row(name, str(row["requests"]), str(row["succeeded"]), f"{row['tokens_per_s']:.1f}",
                      _ms(row["ttft_p50"]), _ms(row["ttft_p95"]), _ms(row["ttft_p99"]), _ms(row["e2e_p95"]),
                      _pct(row.get("gpu_hit_rate")), _pct(row.get("host_hit_rate")),
                      f"{row.get('evictions', 0):.0f}")
    return table


def ttft_table(summary: dict) -> Table | None:
    """Where the client's TTFT went, summed over the run: SGLang's own stamps split it, and the
    server's phases (from /metrics) say how much of it the server's series explain."""
    split, phases = summary.get("ttft_breakdown"), summary.get("ttft_phase_s")
    if not split:
        return None
    client = split["client_s"]
    table = Table(title=f"where the client's time to first token went ({split['requests']} streamed requests, "
                  "sums)")
    for column in ("part", "seconds", "share"):
        table.add_column(column, justify="left" if column == "part" else "right")
    rows = [("client's TTFT", client),
            ("  before SGLang's arrival (sending, the server reading and parsing it)", split["before_sglang_s"]),
            ("  SGLang: arrival to first chunk handed on", split["in_sglang_s"]),
            ("  after (the server writing the chunk, the client reading it)", split["after_sglang_s"])]
    if phases:
        rows += [("server's TTFT phases, all", sum(phases.values())), ("  of which http", phases.get("http", 0.0))]
    for part, seconds in rows:
        table.add_row(part, f"{seconds:.3f}", f"{seconds / client:.1%}" if client else "-")
    return table


def run_traffic(args: argparse.Namespace, console: Console) -> int:
    workload = workload_from(args)
    out = Path(args.out)
    with contextlib.ExitStack() as stack:
        if args.url:
            url, names = args.url, server_adapters(args.url)
            if len(names) < workload.adapters:
                raise ValueError(f"the server has {len(names)} adapters loaded ({', '.join(names) or 'none'}); "
                                 f"--adapters asks for {workload.adapters}")
            names = names[:workload.adapters]
        else:
            url, names = stack.enter_context(embedded_server(workload.adapters, args.slots, console=console))
        started = time.time()
        run = run_workload(url, names, workload, console)
    result = traffic.summary(run)
    console.print(summary_table(result))
    if (breakdown := ttft_table(result)) is not None:
        console.print(breakdown)
    errors = result["send_error_s"]
    console.print(f"{result['succeeded']}/{result['requests']} requests in {result['duration_s']:.1f} s, "
                  f"{result['output_tokens_per_s']:.1f} output tokens/s; send time vs schedule: "
                  f"p50 {errors['p50'] * 1000:.2f} ms, p99 {errors['p99'] * 1000:.2f} ms")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-result.json").write_text(traffic.to_json(run, workload))
    pngs = charts.draw(result, run.outcomes, out)
    console.print(f"wrote {out / 'bench-result.json'} and {', '.join(p.name for p in pngs)}")
    if args.record:
        write_schedule(args.record, schedule(workload), names, started)
        console.print(f"wrote the schedule as an access log: {args.record} (lora-telemetry advise {args.record})")
    return 0


def stub_accuracy(args: argparse.Namespace, console: Console) -> int:
    """Send-time error against a server that answers at once (the generator's own limit)."""
    from lora_telemetry.testbed.server import free_port

    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "lora_telemetry.bench.stub", str(port)])
    try:
        time.sleep(1.0)
        workload = Workload(adapters=4, rate=args.stub_rate, duration=args.duration, seed=args.seed)
        run = traffic.run(traffic.drive(f"http://127.0.0.1:{port}", ["a", "b", "c", "d"], schedule(workload),
                                        watch=False))
    finally:
        stub.terminate()
    errors = run.send_errors()
    p50, p99 = traffic.percentile(errors, 0.5), traffic.percentile(errors, 0.99)
    console.print(f"generator accuracy at {args.stub_rate:g} requests/s against an instant stub, "
                  f"{len(errors)} requests: send time vs schedule p50 {p50 * 1000:.3f} ms, "
                  f"p99 {p99 * 1000:.3f} ms, max {max(errors) * 1000:.3f} ms (goal: p99 < 1 ms); "
                  f"{sum(o.ok for o in run.outcomes)} answered")
    return 0
