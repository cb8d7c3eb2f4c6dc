"""The miss-ratio curve: what each pool size would miss, with today's and the advised size marked;
and for a fleet, the hit rate each routing gives per slot count."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lora_telemetry.capacity.analysis import Analysis  # noqa: E402
from lora_telemetry.capacity.curves import Curve  # noqa: E402
from lora_telemetry.capacity.fleet import FleetAdvice  # noqa: E402


def _plot(axis: plt.Axes, curve: Curve, title: str, xlabel: str, now: int | None, advised: int) -> None:
    misses = [1 - curve.hit_rate(i) for i in range(len(curve.sizes))]
    axis.plot(curve.sizes, misses, "o-", color="#4c72b0", markersize=3, label="miss ratio")
    for size, colour, label in ((now, "#c44e52", "now"), (advised, "#55a868", "advised")):
        if size is not None and size in curve.sizes:
            axis.axvline(size, color=colour, linestyle="--", linewidth=1)
            axis.annotate(f"{label}: {size}", (size, misses[curve.sizes.index(size)]), textcoords="offset points",
                          xytext=(6, 8), color=colour)
    axis.set_xlim(curve.sizes[0] - 0.5, curve.sizes[-1] + max(1.0, 0.12 * len(curve.sizes)))
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("share of requests that missed")
    axis.set_ylim(0, max(misses + [0.05]) * 1.1)
    axis.grid(alpha=0.3)


def draw(analysis: Analysis, target: float, path: Path) -> Path:
    panels = 2 if analysis.host is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    now = analysis.pool.slots if analysis.pool else None
    _plot(axes[0][0], analysis.slots, f"GPU slots ({analysis.policy.upper()})", "--max-loras-per-batch", now,
          analysis.smallest(analysis.slots, target)[0])
    if analysis.host is not None:
        _plot(axes[0][1], analysis.host, "Host tier (LRU)", "--max-loaded-loras", None,
              analysis.smallest(analysis.host, target)[0])
    scheduled = sum(analysis.slots.requests.values())
    figure.suptitle(f"Miss-ratio curves: {analysis.batches:,} batches, {scheduled:,} adapter requests")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def draw_fleet(advice: FleetAdvice, target: float, path: Path) -> Path:
    """Gpu hit rate against slots per replica, one line per routing, one panel per replica count."""
    counts = [n for n in advice.counts if n > 1] or advice.counts
    figure, axes = plt.subplots(1, len(counts), figsize=(4.6 * len(counts), 3.8), squeeze=False, sharey=True)
    colours = {"recorded": "#8c8c8c", "round-robin": "#4c72b0", "random": "#dd8452", "adapter-affine": "#55a868"}
    for axis, replicas in zip(axes[0], counts, strict=True):
        for policy, colour in colours.items():
            if (policy, replicas) in advice.curves:
                rates = [advice.hit_rate(policy, replicas, s) for s in advice.sizes]
                axis.plot(advice.sizes, rates, "o-", markersize=3, color=colour, label=policy)
        axis.axhline(target, color="#c44e52", linestyle=":", linewidth=1)
        axis.set_title(f"{replicas} replicas")
        axis.set_xlabel("slots per replica (--max-loras-per-batch)")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("gpu hit rate")
    axes[0][0].legend(loc="lower right", fontsize=8)
    figure.suptitle(f"Routing and slots: {advice.requests:,} requests from {len(advice.replicas)} replicas "
                    f"(dotted: target {target:.0%})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
