"""The bench's PNG charts: request share against gpu hit rate, TTFT by adapter, evictions over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _label(name: str) -> str:
    return "base model" if name == "__base__" else name


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def draw(summary: dict, outcomes: list, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    adapters = summary["adapters"]
    names = sorted(adapters, key=lambda n: -adapters[n]["requests"])
    total = sum(a["requests"] for a in adapters.values()) or 1
    paths = []

    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.bar([_label(n) for n in names], [adapters[n]["requests"] / total for n in names], color="#4c72b0",
             label="share of requests")
    axis.set_ylabel("share of requests")
    twin = axis.twinx()
    twin.plot([_label(n) for n in names], [adapters[n].get("gpu_hit_rate") or 0 for n in names], "o-",
              color="#dd8452", label="gpu tier hit rate")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("gpu tier hit rate")
    axis.set_title("Request share and gpu tier hit rate by adapter")
    figure.legend(loc="upper right", fontsize=8)
    paths.append(_save(figure, out / "share_vs_hit_rate.png"))

    figure, axis = plt.subplots(figsize=(8, 4.5))
    data = [[o.ttft * 1000 for o in outcomes if o.adapter == n and o.ok and o.ttft is not None] or [0] for n in names]
    axis.boxplot(data, showfliers=False)
    axis.set_xticks(range(1, len(names) + 1), [_label(n) for n in names])
    axis.set_ylabel("TTFT (ms)")
    axis.set_title("Time to first token by adapter (most requested first)")
    paths.append(_save(figure, out / "ttft_by_adapter.png"))

    figure, axis = plt.subplots(figsize=(8, 4.5))
    timeline = summary["evictions_over_time"]
    if timeline:
        first = timeline[0][1]
        axis.plot([t for t, _ in timeline], [v - first for _, v in timeline], color="#c44e52")
    axis.set_xlabel("seconds")
    axis.set_ylabel("evictions since start")
    axis.set_title("Pool evictions over the run")
    paths.append(_save(figure, out / "evictions_over_time.png"))
    return paths
