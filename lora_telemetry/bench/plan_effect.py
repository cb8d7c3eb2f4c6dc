"""``lora-telemetry bench --plan-effect``: one skewed workload served twice on identical test-bed
servers, first with SGLang's LRU, then with the plan ``advise --plan`` makes from the first run's
access log; the plan's predicted gpu hit rate, slot loads (reloads among them) and slot-load time
beside those measured, and for the hot adapters (pinned or raised) the slot loads, the time their
requests waited for them, and their TTFT.

Both servers hold every adapter in host memory before traffic starts (the first from
``--lora-paths``, the second by preloading its plan), so the gpu tier is the only difference.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lora_telemetry.bench import traffic  # noqa: E402
from lora_telemetry.bench.command import embedded_server, run_workload, workload_from  # noqa: E402
from lora_telemetry.capacity.planner import Planned, make_plan  # noqa: E402


@dataclass
class Served:
    """One run's figures: gpu lookups and slot-load time from /metrics deltas, TTFT from the client."""

    label: str
    run: traffic.Run
    summary: dict

    @property
    def outcomes(self) -> list:
        return self.run.outcomes

    def _delta(self, family: str, names: list[str] | None = None, **match: str) -> float:
        def total(metrics) -> float:
            if names is None:
                return metrics.total(family, **match)
            return sum(metrics.total(family, lora_name=name, **match) for name in names)

        return total(self.run.after) - total(self.run.before)

    @property
    def hits(self) -> float:
        return self._delta("sglang_lora_cache_lookups_total", tier="gpu", result="hit")

    @property
    def misses(self) -> float:
        return self._delta("sglang_lora_cache_lookups_total", tier="gpu", result="miss")

    @property
    def hit_rate(self) -> float:
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    def slot_loads(self, names: list[str] | None = None) -> float:
        """Copies of ``names`` (of every adapter when None) into a slot, reloads included."""
        names = [n for n in self._adapters() if n != "__base__"] if names is None else names
        return self._delta("sglang_lora_pool_slot_loads_total", names)

    def _adapters(self) -> list[str]:
        return list(self.run.after.by("sglang_lora_pool_slot_loads_total", "lora_name"))

    @property
    def reloads(self) -> float:
        return self._delta("sglang_lora_pool_slot_reloads_total")

    @property
    def slot_load_time(self) -> float:
        """Seconds the server spent copying adapters into slots (every copy, timed where it happens)."""
        return self._delta("sglang_lora_pool_slot_load_seconds_sum")

    def slot_load_seconds(self, names: list[str]) -> float:
        """Time the requests of ``names`` spent waiting for those copies (their TTFT's slot_load phase)."""
        return self._delta("sglang_lora_ttft_phase_seconds_sum", names, phase="slot_load")

    def ttft_p95(self, names: list[str]) -> float | None:
        return traffic.percentile([o.ttft for o in self.outcomes if o.ok and o.ttft is not None
                                   and o.adapter in names], 0.95)

    def succeeded(self) -> int:
        return sum(o.ok for o in self.outcomes)

    def figures(self, hot: list[str]) -> dict:
        names = sorted({o.adapter for o in self.outcomes})
        return {"gpu_hit_rate": self.hit_rate, "hits": self.hits, "misses": self.misses,
                "slot_loads": {name: self.slot_loads([name]) for name in names},
                "slot_loads_total": self.slot_loads(), "reloads": self.reloads, "slot_load_s": self.slot_load_time,
                "hot_slot_loads": self.slot_loads(hot), "hot_slot_load_s": self.slot_load_seconds(hot),
                "ttft_p95_hot": self.ttft_p95(hot), "ok": self.succeeded()}


def _serve(label: str, args: argparse.Namespace, env: dict[str, str], console: Console,
           plan: Path | None) -> Served:
    workload = workload_from(args)
    with embedded_server(workload.adapters, args.slots, env, console, plan) as (url, names):
        console.print(f"[bold]{label}[/bold]: {workload.requests or workload.duration} "
                      f"{'requests' if workload.requests else 's'} over {len(names)} adapters, {args.slots} slots")
        run = run_workload(url, names, workload, console)
    return Served(label, run, traffic.summary(run))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _table(stock: Served, planned: Served, plan: Planned, hot: list[str]) -> Table:
    table = Table(title="The same workload, SGLang's LRU then the plan (predicted / measured)")
    for column in ("", "gpu hit rate", "slot loads", "of them reloads", "slot-load time", "hot: slot loads",
                   "hot: time in slot loads", f"TTFT p95, hot ({', '.join(hot)})", "TTFT p95, all", "requests ok"):
        table.add_column(column, justify="left" if not column else "right")
    everyone = sorted({o.adapter for o in stock.outcomes})
    for label, predicted, served in (("LRU (stock)", plan.recorded, stock),
                                     (f"plan: {plan.chosen.describe()}", plan.chosen, planned)):
        table.add_row(label, f"{predicted.hit_rate:.1%} / {served.hit_rate:.1%}",
                      f"{predicted.slot_loads} / {served.slot_loads():.0f}",
                      f"{predicted.reloads} / {served.reloads:.0f}",
                      f"{_ms(predicted.slot_load_s)} / {_ms(served.slot_load_time)}", f"{served.slot_loads(hot):.0f}",
                      _ms(served.slot_load_seconds(hot)), _ms(served.ttft_p95(hot)), _ms(served.ttft_p95(everyone)),
                      f"{served.succeeded()}/{len(served.outcomes)}")
    return table


def _chart(stock: Served, planned: Served, out: Path) -> Path:
    adapters = stock.summary["adapters"]
    names = sorted(adapters, key=lambda n: -adapters[n]["requests"])
    figure, (hits, loads, ttft) = plt.subplots(1, 3, figsize=(15, 4.2))
    width, xs = 0.4, range(len(names))
    for offset, served, color in ((-width / 2, stock, "#8c8c8c"), (width / 2, planned, "#4c72b0")):
        rates = [served.summary["adapters"].get(n, {}).get("gpu_hit_rate") or 0 for n in names]
        hits.bar([x + offset for x in xs], rates, width, color=color, label=served.label)
        waited = [served.slot_load_seconds([n]) * 1000 for n in names]
        loads.bar([x + offset for x in xs], waited, width, color=color, label=served.label)
        p95 = [(served.ttft_p95([n]) or 0) * 1000 for n in names]
        ttft.bar([x + offset for x in xs], p95, width, color=color, label=served.label)
    for axis, title, unit in ((hits, "gpu hit rate by adapter", "hit rate"),
                              (loads, "time its requests waited for slot loads", "ms, all requests"),
                              (ttft, "TTFT p95 by adapter", "ms")):
        axis.set_xticks(list(xs), names, rotation=45, ha="right")
        axis.set_title(title + " (most requested first)", fontsize=10)
        axis.set_ylabel(unit)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path = out / "plan_effect.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def run(args: argparse.Namespace, console: Console) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    access_log, plan_file = out / "stock-access.log", out / "plan.json"
    access_log.unlink(missing_ok=True)
    stock = _serve("stock", args, {"LORA_TELEMETRY_ACCESS_LOG": str(access_log)}, console, None)
    planned_plan = make_plan(access_log, args.slots)
    plan_file.write_text(planned_plan.plan.to_json())
    chosen = planned_plan.chosen
    console.print(f"plan from the stock run's access log: {chosen.describe()}; predicted gpu hit rate "
                  f"{chosen.hit_rate:.1%}, {chosen.low:.1%} to {chosen.high:.1%} in another run "
                  f"(LRU replayed: {planned_plan.recorded.hit_rate:.1%})")
    planned = _serve("plan", args, {}, console, plan_file)
    hot = list(planned_plan.plan.pin) + sorted(planned_plan.plan.priorities,
                                               key=lambda n: -planned_plan.plan.priorities[n])
    hot = hot or planned_plan.plan.preload[:1]
    console.print(_table(stock, planned, planned_plan, hot))
    error = planned.hit_rate - planned_plan.chosen.hit_rate
    loads = planned.slot_loads()
    off = (chosen.slot_loads - loads) / loads if loads else 0.0
    console.print(f"measured with the plan minus predicted: {error * 100:+.1f} points of gpu hit rate; "
                  f"slot loads predicted {off:+.0%} off the {loads:.0f} measured")
    chart = _chart(stock, planned, out)
    figures = {"plan": json.loads(plan_file.read_text()), "hot": hot,
               "stock": stock.figures(hot),
               "planned": {**planned.figures(hot), "predicted": chosen.hit_rate,
                           "predicted_range": [chosen.low, chosen.high], "predicted_slot_loads": chosen.slot_loads,
                           "predicted_reloads": chosen.reloads, "predicted_slot_load_s": chosen.slot_load_s},
               "plan_helps": planned_plan.helps}
    (out / "plan-effect.json").write_text(json.dumps(figures, indent=1))
    console.print(f"wrote {plan_file}, {out / 'plan-effect.json'} and {chart}")
    return 0
