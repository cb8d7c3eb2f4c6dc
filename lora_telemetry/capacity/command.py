"""``lora-telemetry advise FILE``: tables, a recommendation and the curve, from an access log."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lora_telemetry.capacity import chart, planner
from lora_telemetry.capacity.analysis import Analysis, analyse, one_line
from lora_telemetry.capacity.curves import Curve
from lora_telemetry.capacity.recording import RecordingError


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def shown_sizes(sizes: list[int], keep: set[int], most: int = 24) -> list[int]:
    """All sizes if few; otherwise the small ones, a spread of larger ones, and ``keep``."""
    if len(sizes) <= most:
        return sizes
    step = max(1, (len(sizes) - 12) // (most - 12))
    return sorted({*sizes[:12], *sizes[12::step], sizes[-1], *(k for k in keep if k in sizes)})


def _slot_table(analysis: Analysis, advised: int) -> Table:
    curve, pool = analysis.slots, analysis.pool
    now = pool.slots if pool else None
    table = Table(title=f"GPU slots (--max-loras-per-batch), {analysis.policy.upper()}")
    timed = bool(analysis.prices)
    for column in ("slots", "gpu hit rate", "slot loads / 1,000 batches",
                   *(["slot-load time (the recording's)"] if timed else []), "pool memory", ""):
        table.add_column(column, justify="right" if column else "left")
    for size in shown_sizes(curve.sizes, {advised, now or 0}):
        i = curve.sizes.index(size)
        note = " ".join(label for label, at in (("now", now), ("advised", advised)) if at == size)
        memory = _bytes(size * pool.slot_bytes) if pool else "?"
        time = [f"{analysis.load_seconds(i):,.2f} s"] if timed else []
        table.add_row(str(size), f"{curve.hit_rate(i):.1%}", f"{curve.loads_per_1000(i):,.1f}", *time, memory, note)
    return table


def _adapter_table(analysis: Analysis, advised: int, top: int) -> Table:
    curve = analysis.slots
    now = analysis.index(analysis.pool.slots) if analysis.pool else None
    at = analysis.index(advised)
    table = Table(title=f"Per adapter (the {top} most requested)")
    table.add_column("adapter")
    table.add_column("requests", justify="right")
    for label in ([f"hit rate now ({analysis.pool.slots})"] if now is not None else []) + [f"at {advised}"]:
        table.add_column(label, justify="right")
    table.add_column(f"slot loads / 1,000 batches at {advised}", justify="right")
    for name in sorted(curve.requests, key=lambda n: -curve.requests[n])[:top]:
        rates = [f"{curve.hit_rate(i, name):.1%}" for i in ([now] if now is not None else []) + [at]]
        table.add_row(name, f"{curve.requests[name]:,}", *rates, f"{curve.loads_per_1000(at, name):,.1f}")
    return table


def _host_table(host: Curve, advised: int) -> Table:
    table = Table(title="Host tier (--max-loaded-loras), LRU over requests")
    for column in ("adapters loaded", "host hit rate", "loads / 1,000 requests", ""):
        table.add_column(column, justify="right" if column else "left")
    total = sum(host.requests.values()) or 1
    for size in shown_sizes(host.sizes, {advised}):
        i = host.sizes.index(size)
        loads = 1000 * sum(int(host.loads[n][i]) for n in host.loads) / total
        table.add_row(str(size), f"{host.hit_rate(i):.1%}", f"{loads:,.1f}", "advised" if size == advised else "")
    return table


def _advice(analysis: Analysis, target: float) -> list[str]:
    advised, reached = analysis.smallest(analysis.slots, target)
    rate = analysis.slots.hit_rate(analysis.index(advised))
    lines = [f"--max-loras-per-batch {advised}: gpu hit rate {rate:.1%}"
             + ("" if reached else f" (the most this traffic allows; first uses always miss, so {target:.0%} is "
                                   "out of reach)")]
    pool = analysis.pool
    if pool:
        extra = advised - pool.slots
        cost = f"each slot holds {_bytes(pool.slot_bytes)}"
        if extra > 0:
            cost += f"; {extra} more than now take {_bytes(extra * pool.slot_bytes)}"
        lines.append(f"  {one_line(analysis, target)}; {cost}")
    if analysis.host is not None:
        host, host_reached = analysis.smallest(analysis.host, target)
        rate = analysis.host.hit_rate(analysis.host.sizes.index(host))
        lines.append(f"--max-loaded-loras {host}: host hit rate {rate:.1%}"
                     + ("" if host_reached else " (the most this traffic allows)"))
    return lines + remedies(analysis, advised)


def remedies(analysis: Analysis, advised: int) -> list[str]:
    """SGLang's own remedies for slot-load time, each with what it would save over the recording:
    more slots (the replay at that count, priced per load), and overlap loading, which takes the
    copies off the forward batches at the price of pinned host memory and a host tier of at most
    twice the slots. Only where the recording timed its copies and says its pool's size."""
    pool, now = analysis.pool, analysis.index(analysis.pool.slots) if analysis.pool else None
    if not analysis.prices or pool is None or now is None or analysis.overlap:
        return []
    spent = analysis.load_seconds(now) or 0.0
    scheduled = sum(analysis.slots.requests.values()) or 1
    span = analysis.span_s or 1.0
    lines = [f"Slot-load time now: {spent:.2f} s over the recording's {analysis.span_s:,.0f} s "
             f"({spent / span:.1%} of it; {1000 * spent / scheduled:.1f} ms per request on average)"]
    at = analysis.index(advised)
    if advised > pool.slots and at is not None:
        saved = spent - (analysis.load_seconds(at) or 0.0)
        lines.append(f"  more slots: --max-loras-per-batch {advised} would save {saved:.2f} s of it")
    if spent:
        limit = 2 * pool.slots
        held = sorted(analysis.copied.values(), reverse=True)[:limit]
        line = (f"  --enable-lora-overlap-loading: copies on a side stream while batches run, so up to {spent:.2f} s "
                f"leave the forward batches (a request still waits for its own adapter's copy); costs pinned "
                f"host memory for the loaded adapters (up to {_bytes(sum(held))}) and needs --max-loaded-loras "
                f"<= {limit}")
        distinct = len(analysis.slots.requests)
        if distinct > limit and analysis.host is not None and limit in analysis.host.sizes:
            rate = analysis.host.hit_rate(analysis.host.sizes.index(limit))
            line += (f": this traffic uses {distinct} adapters, and with {limit} loaded its host hit rate would be "
                     f"{rate:.1%} (the rest loaded from disk)")
        lines.append(line)
    return lines


def _json(analysis: Analysis, target: float) -> dict:
    def curve(c: Curve) -> dict:
        return {"sizes": c.sizes, "hit_rate": [c.hit_rate(i) for i in range(len(c.sizes))],
                "per_adapter": {n: {"requests": c.requests[n], "hits": c.hits[n].tolist(), "loads": c.loads[n].tolist()}
                                for n in c.requests}}

    return {"policy": analysis.policy, "batches": analysis.batches, "requests": analysis.requests,
            "target": target, "advised_slots": analysis.smallest(analysis.slots, target)[0],
            "slots": curve(analysis.slots), "host": curve(analysis.host) if analysis.host else None,
            "pool": None if analysis.pool is None else {"slots": analysis.pool.slots, "policy": analysis.pool.policy,
                                                        "slot_bytes": analysis.pool.slot_bytes},
            "slot_load_s": [analysis.load_seconds(i) for i in range(len(analysis.slots.sizes))]
            if analysis.prices else None}


def _rate(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f} s" if value < 10 else f"{value:,.1f} s"


def _range(candidate: planner.Candidate) -> str:
    return f"{candidate.low:.1%}" if candidate.low == candidate.high else f"{candidate.low:.1%}-{candidate.high:.1%}"


def _write_plan(args: argparse.Namespace, console: Console) -> int:
    """``--plan OUT``: the best pins and priorities for the slot budget, and what they should give."""
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("replaying each candidate plan", total=None)
            planned = planner.make_plan(args.file, args.slots, args.preload, lambda: progress.advance(task))
    except RecordingError as error:
        console.print(f"[red]{error}[/red]")
        return 1
    plan = planned.plan
    timed = planned.recorded.slot_load_s is not None
    table = Table(title=f"Plans for {plan.slots} slots, replayed on the recording (cheapest first)")
    for column in ("plan", "slot-load time" if timed else "slot loads", "slot loads", "of them reloads",
                   "gpu hit rate", "another run", "batches split"):
        table.add_column(column, justify="left" if column == "plan" else "right")
    ordered = sorted(planned.considered, key=lambda c: (round(c.cost, 6), -c.low, -c.hit_rate))
    for candidate in ordered[:args.top]:
        mark = " (chosen)" if candidate is planned.chosen else " (recorded)" if candidate is planned.recorded else ""
        mark = " (recorded, chosen)" if candidate is planned.chosen is planned.recorded else mark
        split = f"{candidate.split:.1%}" + ("" if candidate.admissible else " (too many: not chosen)")
        cost = _seconds(candidate.slot_load_s) if timed else f"{candidate.slot_loads:,}"
        table.add_row(candidate.describe() + mark, cost, f"{candidate.slot_loads:,}", f"{candidate.reloads:,}",
                      f"{candidate.hit_rate:.1%}", _range(candidate), split)
    console.print(table)
    console.print("[dim]slot-load time: slot loads, reloads of running requests' adapters included, times the "
                  "seconds per load the recording measured for adapters of that size; another run: the hit-rate "
                  "range the same traffic may give, as the base model keeps its slot or gives it up[/dim]"
                  if timed else "[dim]the recording timed no slot load (an access log written before C records): "
                  "plans are ranked by their number[/dim]")
    chosen, recorded = planned.chosen, planned.recorded
    if not planned.helps:
        console.print(f"[bold]No plan helps:[/bold] none of {len(planned.considered) - 1} pin and priority plans "
                      f"predicts less slot-load time than {recorded.describe()} as recorded "
                      f"({_seconds(recorded.slot_load_s) if timed else f'{recorded.slot_loads:,} loads'}); "
                      f"the plan written keeps the pool's policy and preloads {len(plan.preload)} adapters")
    else:
        console.print(f"[bold]Plan:[/bold] {chosen.describe()}; preload {len(plan.preload)} adapters")
        saved = (f"slot-load time {_seconds(chosen.slot_load_s)} predicted against {_seconds(recorded.slot_load_s)}"
                 if timed else "slot loads")
        console.print(f"  {saved} ({chosen.slot_loads:,} loads against {recorded.slot_loads:,}, "
                      f"{chosen.reloads:,} against {recorded.reloads:,} reloads)")
    console.print(f"  gpu hit rate {_rate(chosen.hit_rate)} predicted ({_range(chosen)} in another "
                  f"run), {_rate(recorded.hit_rate)} recorded; host hit rate {_rate(planned.host_planned)} "
                  f"predicted, {_rate(planned.host_now)} recorded (with {len(plan.preload)} adapters in host memory)")
    args.plan.write_text(plan.to_json())
    console.print(f"plan: {args.plan} (serve it with LORA_TELEMETRY_PLAN={args.plan} and LORA_TELEMETRY_ADAPTER_DIR, "
                  "or LoRAEngine(plan=...))")
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    if args.plan is not None:
        return _write_plan(args, console)
    if not 0 < args.target <= 1:
        console.print(f"[red]--target must be a hit rate above 0 and at most 1, not {args.target}[/red]")
        return 2
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("replaying each slot count", total=None)
            analysis = analyse(args.file, args.policy, args.partial, lambda _size: progress.advance(task))
    except RecordingError as error:
        console.print(f"[red]{error}[/red]\nAnalyse what was read before it with --partial.")
        return 1
    except OSError as error:
        console.print(f"[red]cannot read {args.file}: {error.strerror}[/red]")
        return 1
    if analysis.stopped_at is not None:
        console.print(f"[yellow]stopped reading at line {analysis.stopped_at.line} "
                      f"(byte offset {analysis.stopped_at.offset}): {analysis.stopped_at}; "
                      "analysing what came before[/yellow]")
    pool = analysis.pool
    scheduled = sum(analysis.slots.requests.values())
    console.print(f"{analysis.batches:,} batches over {analysis.span_s:,.0f} s scheduling {scheduled:,} requests on "
                  f"{len(analysis.slots.requests)} adapters"
                  + (f"; {analysis.requests:,} finished requests" if analysis.requests else "")
                  + (f"; recorded pool: {pool.slots} slots, {pool.policy}, {_bytes(pool.slot_bytes)} per slot"
                     if pool else ""))
    advised = analysis.smallest(analysis.slots, args.target)[0]
    console.print(_slot_table(analysis, advised))
    console.print(_adapter_table(analysis, advised, args.top))
    if analysis.host is not None:
        console.print(_host_table(analysis.host, analysis.smallest(analysis.host, args.target)[0]))
    console.print(f"[bold]For a hit rate of {args.target:.0%}:[/bold]")
    for line in _advice(analysis, args.target):
        console.print(line)
    path = chart.draw(analysis, args.target, args.chart or args.file.with_suffix(".png"))
    console.print(f"miss-ratio curve: {path}")
    if args.json:
        args.json.write_text(json.dumps(_json(analysis, args.target), indent=1))
        console.print(f"figures: {args.json}")
    console.print(f"analysed {analysis.batches:,} batches in {analysis.seconds:.2f} s")
    return 0
