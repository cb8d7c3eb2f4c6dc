"""The dashboard's main panels drawn with matplotlib from a Prometheus run (the README's picture).

``LORA_TELEMETRY_DASHBOARD_PNG=docs/dashboard.png pytest tests/dashboards/test_prometheus_e2e.py``
redraws it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

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
