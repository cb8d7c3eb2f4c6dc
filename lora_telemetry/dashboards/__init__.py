"""The Grafana dashboard, the Prometheus rules and llm-d's picker config, shipped with the package so that they reach
users who never see its repository; :func:`write` copies them out (``lora-telemetry dashboards DIR``)."""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = (
    "grafana/lora-telemetry.json",  # import into Grafana, or provision with the file below
    "grafana/provisioning.yml",
    "prometheus/rules.yml",  # recording and alerting rules
    "prometheus/rules_test.yml",  # promtool test rules prometheus/rules_test.yml
    "prometheus/prometheus.yml",  # an example scrape configuration
    "llm-d/endpoint-picker.yaml",  # llm-d's endpoint picker reading our LoRA gauge
)


def write(target: str | Path) -> list[Path]:
    """Copy every file into ``target`` (made if missing), keeping the layout; returns the paths."""
    written = []
    for name in FILES:
        destination = Path(target) / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / name, destination)
        written.append(destination)
    return written
