"""``lora-telemetry bench --plan-effect``: one skewed workload served on identical servers (the
test bed's, or ``--model``'s), first with SGLang's LRU, then with the plan ``advise --plan`` makes
from that first run's access log, then again in further pairs whose order alternates (``--rounds``);
the plan's predicted gpu hit rate, slot loads (reloads among them) and slot-load time beside those
measured, and for the hot adapters (pinned or raised) the slot loads, the time their requests
waited for them, and their TTFT. Over the pairs, the plan's slot-load time and hot TTFT p95 as a
share of LRU's.

Both servers hold every adapter in host memory before traffic starts (the first from
``--lora-paths``, the second by preloading its plan), so the gpu tier is the only difference.
Every run sends the same seeded schedule, the one the plan was made from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lora_telemetry.bench import traffic  # noqa: E402
from lora_telemetry.bench.command import run_workload, workload_from  # noqa: E402
from lora_telemetry.bench.servers import chosen_adapters, side_by_side, started  # noqa: E402
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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _table(runs: list[tuple[str, Served]], plan: Planned, hot: list[str]) -> Table:
    table = Table(title="The same workload, SGLang's LRU and the plan (predicted / measured)")
    for column in ("run", "gpu hit rate", "slot loads", "of them reloads", "slot-load time", "hot: slot loads",
                   "hot: time in slot loads", f"TTFT p95, hot ({', '.join(hot)})", "TTFT p95, all", "requests ok"):
        table.add_column(column, justify="left" if column == "run" else "right")
    everyone = sorted({o.adapter for o in runs[0][1].outcomes})
    for label, served in runs:
        predicted = plan.recorded if served.label == "LRU" else plan.chosen
        table.add_row(f"{label}: {served.label}", f"{predicted.hit_rate:.1%} / {served.hit_rate:.1%}",
                      f"{predicted.slot_loads} / {served.slot_loads():.0f}",
                      f"{predicted.reloads} / {served.reloads:.0f}",
                      f"{_ms(predicted.slot_load_s)} / {_ms(served.slot_load_time)}", f"{served.slot_loads(hot):.0f}",
                      _ms(served.slot_load_seconds(hot)), _ms(served.ttft_p95(hot)), _ms(served.ttft_p95(everyone)),
                      f"{served.succeeded()}/{len(served.outcomes)}")
    return table


def shares(pairs: list[dict[str, Served]], hot: list[str]) -> dict[str, list[float]]:
    """The plan's figure as a share of LRU's, pair by pair (a pair where LRU's is 0 is left out)."""
    everyone = sorted({o.adapter for pair in pairs for o in pair["LRU"].outcomes})
    figures = {"slot loads": lambda s: s.slot_loads(), "slot-load time": lambda s: s.slot_load_time,
               "hot: TTFT p95": lambda s: s.ttft_p95(hot), "all: TTFT p95": lambda s: s.ttft_p95(everyone)}
    out: dict[str, list[float]] = {}
    for name, figure in figures.items():
        out[name] = [figure(p["plan"]) / figure(p["LRU"]) for p in pairs
                     if figure(p["LRU"]) and figure(p["plan"]) is not None]
    return out


def _shares_table(by_figure: dict[str, list[float]], pairs: int) -> Table:
    table = Table(title=f"plan / LRU over {pairs} pairs (goal: slot-load time <= 0.85, hot TTFT p95 <= 0.80)")
    for column in ("figure", "median", "min", "max"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, values in by_figure.items():
        if values:
            table.add_row(name, f"{statistics.median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}")
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


def order(pairs: int) -> list[tuple[str, str]]:
    """(pair, setting) of each run: LRU first (its access log is the recording), then alternating."""
    settings = ("LRU", "plan")
    return [(f"pair {i + 1}", setting) for i in range(pairs)
            for setting in (settings if i % 2 == 0 else settings[::-1])]


def run(args: argparse.Namespace, console: Console) -> int:
    workload = workload_from(args)
    names = chosen_adapters(args, workload.adapters)
    fractions = side_by_side(args.side_by_side)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    access_log, recording, plan_file = out / "access-lru.log", out / "stock-access.log", out / "plan.json"
    for stale in (access_log, recording):
        stale.unlink(missing_ok=True)
    settings = {"LRU": ({"LORA_TELEMETRY_ACCESS_LOG": str(access_log)}, None), "plan": ({}, plan_file)}
    runs: list[tuple[str, Served]] = []
    planned_plan: Planned | None = None
    with contextlib.ExitStack() as kept:
        urls: dict[str, str] = {}
        for i, (label, setting) in enumerate(order(args.rounds or 1)):
            with contextlib.ExitStack() as fresh:
                if setting not in urls:
                    env, plan = settings[setting]
                    fraction = fractions[len(urls)] if fractions else None
                    log = out / (f"server-{setting}.log" if fractions else f"server-{i + 1}-{setting}.log")
                    url = (kept if fractions else fresh).enter_context(
                        started(args, names, env, log, plan=plan, fraction=fraction))
                    if fractions:
                        urls[setting] = url
                console.print(f"[bold]{label}, {setting}[/bold]: {workload.requests or workload.duration} "
                              f"{'requests' if workload.requests else 's'} over {len(names)} adapters, "
                              f"{args.slots} slots")
                measured = run_workload(urls.get(setting) or url, names, workload, console)
            runs.append((label, Served(setting, measured, traffic.summary(measured))))
            if planned_plan is None:
                shutil.copyfile(access_log, recording)  # the recording: the first LRU run's access log
                planned_plan = make_plan(recording, args.slots)
                plan_file.write_text(planned_plan.plan.to_json())
                console.print(f"plan from the first LRU run's access log: {planned_plan.chosen.describe()}; predicted "
                              f"gpu hit rate {planned_plan.chosen.hit_rate:.1%}, {planned_plan.chosen.low:.1%} to "
                              f"{planned_plan.chosen.high:.1%} in another run (LRU replayed: "
                              f"{planned_plan.recorded.hit_rate:.1%})")
    assert planned_plan is not None
    report(runs, planned_plan, out, plan_file, console)
    return 0


def report(runs: list[tuple[str, Served]], planned_plan: Planned, out: Path, plan_file: Path,
           console: Console) -> None:
    chosen = planned_plan.chosen
    hot = list(planned_plan.plan.pin) + sorted(planned_plan.plan.priorities,
                                               key=lambda n: -planned_plan.plan.priorities[n])
    hot = hot or planned_plan.plan.preload[:1]
    console.print(_table(runs, planned_plan, hot))
    pairs: dict[str, dict[str, Served]] = {}
    for label, served in runs:
        pairs.setdefault(label, {})[served.label] = served
    complete = [p for p in pairs.values() if len(p) == 2]
    by_figure = shares(complete, hot)
    console.print(_shares_table(by_figure, len(complete)))
    measured = [loads for p in complete if (loads := p["plan"].slot_loads())]
    first = complete[0]["plan"]
    console.print(f"measured with the plan minus predicted: {(first.hit_rate - chosen.hit_rate) * 100:+.1f} "
                  f"points of gpu hit rate; slot loads predicted {chosen.slot_loads}: "
                  + ", ".join(f"{(chosen.slot_loads - loads) / loads:+.0%} off the {loads:.0f} measured"
                              for loads in measured))
    stock, planned = complete[0]["LRU"], complete[0]["plan"]
    chart = _chart(stock, planned, out)
    figures = {"plan": json.loads(plan_file.read_text()), "hot": hot,
               "stock": stock.figures(hot),
               "planned": {**planned.figures(hot), "predicted": chosen.hit_rate,
                           "predicted_range": [chosen.low, chosen.high], "predicted_slot_loads": chosen.slot_loads,
                           "predicted_reloads": chosen.reloads, "predicted_slot_load_s": chosen.slot_load_s},
               "recorded_predicted": {"slot_loads": planned_plan.recorded.slot_loads,
                                      "reloads": planned_plan.recorded.reloads,
                                      "slot_load_s": planned_plan.recorded.slot_load_s},
               "pairs": [{setting: served.figures(hot) for setting, served in p.items()} for p in complete],
               "plan_over_lru": by_figure, "plan_helps": planned_plan.helps}
    (out / "plan-effect.json").write_text(json.dumps(figures, indent=1))
    console.print(f"wrote {plan_file}, {out / 'plan-effect.json'} and {chart}")
