"""The dashboard's main panels drawn with matplotlib from a Prometheus run (the README's pictures).

``LORA_TELEMETRY_DASHBOARD_PNG=docs/dashboard.png pytest tests/dashboards/test_prometheus_e2e.py``
redraws them (``docs/latency.png`` beside it: where TTFT goes, and how soon victims come back).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from lora_telemetry.events import PHASES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RATE = "[10s]"
PANELS = [
    ("Requests per second by adapter", f"sum by (lora_name) (rate(sglang_lora_requests_total{RATE}))", "req/s"),
    ("GPU tier hit rate", f'sum by (lora_name) (rate(sglang_lora_cache_lookups_total{{tier="gpu",result="hit"}}{RATE}))'
     f' / sum by (lora_name) (rate(sglang_lora_cache_lookups_total{{tier="gpu"}}{RATE}))', "ratio"),
    ("Evictions per second by adapter", f"sum by (lora_name) (rate(sglang_lora_pool_evictions_total{RATE}))", "1/s"),
    ("TTFT p95 by adapter", "histogram_quantile(0.95, sum by (lora_name, le) "
     f"(rate(sglang_lora_time_to_first_token_seconds_bucket{RATE})))", "s"),
    ("Pool slots", "sum by (state) (sglang_lora_pool_slots)", "slots"),
    ("Adapter memory by tier", "sum by (tier) (sglang_lora_adapter_memory_bytes)", "bytes"),
]


def draw(prometheus, out: Path, seconds: int = 90) -> None:
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for axis, (title, expr, unit) in zip(axes.flat, PANELS, strict=True):
        for series in prometheus.query_range(expr, seconds, step="1s"):
            times = [float(t) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            start = times[0] if times else 0
            label = next(iter(series["metric"].values()), "")
            label = "base model" if label == "__base__" else label  # matplotlib hides labels starting with _
            axis.plot([t - start for t in times], values, label=label)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(unit, fontsize=8)
        axis.set_xlabel("seconds", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6, loc="upper left")
    figure.suptitle("SGLang LoRA adapters on the test bed: 6 adapters, 3 pool slots; "
                    "half-way the mix narrows to 3 adapters", fontsize=12)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)




def _by_adapter(prometheus, expr: str) -> dict[tuple[str, ...], float]:
    out = {}
    for series in prometheus.query(expr):
        value = float(series["value"][1])
        if value == value:  # not NaN
            out[tuple(series["metric"].values())] = value
    return out


def draw_latency(prometheus, out: Path, seconds: int = 900) -> None:
    """The two panels that explain slowness, over the whole run: mean seconds of each TTFT phase per
    adapter (stacked), and each adapter's reuse time after eviction (p50, p95)."""
    window = f"[{seconds}s]"
    means = {}
    for (name, phase), value in _by_adapter(prometheus, (
            f"sum by (lora_name, phase) (increase(sglang_lora_ttft_phase_seconds_sum{window}))"
            f" / sum by (lora_name, phase) (increase(sglang_lora_ttft_phase_seconds_count{window}))")).items():
        means.setdefault(name, {})[phase] = value
    figure, (phases_axis, reuse_axis) = plt.subplots(1, 2, figsize=(15, 4.8))
    names = sorted(means, key=lambda n: sum(means[n].values()))
    left = [0.0] * len(names)
    for phase in PHASES:
        widths = [means[n].get(phase, 0.0) * 1000 for n in names]
        phases_axis.barh(names, widths, left=left, label=phase)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    phases_axis.set_title("Where time to first token goes: mean per phase", fontsize=10)
    phases_axis.set_xlabel("milliseconds", fontsize=8)
    phases_axis.legend(fontsize=7)
    reuse = {q: _by_adapter(prometheus, f"histogram_quantile({q}, sum by (lora_name, le) "
                                        f"(increase(sglang_lora_pool_reuse_seconds_bucket{window})))")
             for q in (0.5, 0.95)}
    adapters = sorted({name for (name,) in reuse[0.5]})
    positions = range(len(adapters))
    for offset, q in ((-0.2, 0.5), (0.2, 0.95)):
        reuse_axis.bar([p + offset for p in positions], [reuse[q].get((n,), 0.0) for n in adapters], width=0.4,
                       label=f"p{round(q * 100)}")
    reuse_axis.set_xticks(list(positions), adapters, fontsize=8)
    reuse_axis.set_title("Slot reuse after eviction: how soon a victim was needed again", fontsize=10)
    reuse_axis.set_ylabel("seconds", fontsize=8)
    reuse_axis.legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
