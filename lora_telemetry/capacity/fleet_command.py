"""``lora-telemetry advise LOG LOG ...``: one access log per replica, the fleet's routing and sizes."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lora_telemetry.capacity import chart
from lora_telemetry.capacity.command import shown_sizes
from lora_telemetry.capacity.fleet import POLICIES, FleetAdvice, advise_fleet
from lora_telemetry.capacity.recording import RecordingError


def _recorded_table(advice: FleetAdvice) -> Table:
    table = Table(title="Recorded routing", caption="each replica's own batches replayed: what it counted")
    for column in ("replica", "access log", "slots", "adapter requests", "gpu hit rate"):
        table.add_column(column, justify="left" if column == "access log" else "right")
    hits = asked = 0
    for index, replica in enumerate(advice.replicas):
        got, wanted = replica.recorded()
        hits, asked = hits + got, asked + wanted
        table.add_row(str(index), str(replica.path), str(replica.slots or "?"), f"{wanted:,}",
                      f"{got / wanted:.1%}" if wanted else "-")
    table.add_row("fleet", "", "", f"{asked:,}", f"{hits / asked:.1%}" if asked else "-", style="bold")
    return table


def _policy_table(advice: FleetAdvice, replicas: int, keep: set[int]) -> Table:
    # One replica takes every request whatever the routing: one column says it.
    policies = [p for p in POLICIES if (p, replicas) in advice.curves][:None if replicas > 1 else 1]
    table = Table(title=f"{replicas} replica{'s' if replicas > 1 else ''}: gpu hit rate by routing",
                  caption="each request its own batch")
    table.add_column("slots each", justify="right")
    for policy in policies:
        table.add_column(policy if replicas > 1 else "any routing", justify="right")
    for slots in shown_sizes(advice.sizes, keep, most=14):
        table.add_row(str(slots), *(f"{advice.hit_rate(p, replicas, slots):.1%}" for p in policies))
    return table


def _cheapest_lines(advice: FleetAdvice, target: float) -> list[str]:
    lines = []
    for policy in POLICIES:
        if not any(key[0] == policy for key in advice.curves):
            continue
        per_count = ", ".join(f"{n}: {slots if slots is not None else '-'}" for n in advice.counts
                              if (policy, n) in advice.curves
                              for slots in [advice.fewest_slots(policy, n, target)])
        found = advice.cheapest(policy, target)
        if found is None:
            best = max(advice.hit_rate(policy, n, advice.sizes[-1]) or 0.0 for n in advice.counts
                       if n >= len(advice.replicas))
            lines.append(f"{policy}: not reached with {len(advice.replicas)} to {advice.counts[-1]} replicas of "
                         f"up to {advice.sizes[-1]} slots (at most {best:.1%}; first uses always miss)")
        else:
            n, slots = found
            lines.append(f"{policy}: {n} replicas x {slots} slots, {n * slots} in all "
                         f"(gpu hit rate {advice.hit_rate(policy, n, slots):.1%}); slots needed by replica count: "
                         f"{per_count}")
    return lines


def _json(advice: FleetAdvice, target: float) -> dict:
    return {
        "target": target, "requests": advice.requests, "slots": advice.sizes, "replicas": advice.counts,
        "recorded": [{"access_log": str(r.path), "slots": r.slots, "gpu_hits": r.recorded()[0],
                      "requests": r.recorded()[1]} for r in advice.replicas],
        "hit_rate": {f"{policy}/{n}": [advice.hit_rate(policy, n, s) for s in advice.sizes]
                     for policy, n in advice.curves},
        "cheapest": {p: advice.cheapest(p, target) for p in POLICIES if any(k[0] == p for k in advice.curves)},
    }


def run(args: argparse.Namespace, console: Console) -> int:
    if args.plan is not None:
        console.print("[red]--plan takes one access log (a plan is for one server)[/red]")
        return 2
    if not 0 < args.target <= 1 or args.spill < 1 or args.window < 1:
        console.print("[red]--target must be above 0 and at most 1, --spill at least 1, --window at least 1[/red]")
        return 2
    try:
        counts = [int(n) for n in args.replicas.split(",")] if args.replicas else None
        if counts is not None and min(counts) < 1:
            raise ValueError
    except ValueError:
        console.print(f"[red]--replicas takes replica counts separated by commas, not {args.replicas!r}[/red]")
        return 2
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("replaying", total=None)
            advice = advise_fleet(args.files, counts, args.seed, args.spill, args.window,
                                  lambda step: progress.update(task, description=f"replaying {step}", advance=1))
    except RecordingError as error:
        console.print(f"[red]{error}[/red]")
        return 1
    except OSError as error:
        console.print(f"[red]cannot read {error.filename}: {error.strerror}[/red]")
        return 1
    console.print(f"{advice.requests:,} requests from {len(advice.replicas)} replicas")
    console.print(_recorded_table(advice))
    keep = {s for s in (r.slots for r in advice.replicas) if s}
    for replicas in advice.counts:
        console.print(_policy_table(advice, replicas, keep))
    console.print(f"[bold]Cheapest fleet reaching a gpu hit rate of {args.target:.0%}[/bold] (at least the "
                  f"{len(advice.replicas)} replicas recorded; fewest slots in all, then fewest replicas):")
    for line in _cheapest_lines(advice, args.target):
        console.print("  " + line)
    chart_path = chart.draw_fleet(advice, args.target, args.chart or args.files[0].with_name("fleet-advice.png"))
    console.print(f"hit rate by routing: {chart_path}")
    if args.json:
        args.json.write_text(json.dumps(_json(advice, args.target), indent=1))
        console.print(f"figures: {args.json}")
    return 0
