"""``lora-telemetry doctor``: is the plugin installed, and will its hooks find their targets?"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, entry_points, version

from rich.console import Console
from rich.table import Table

from lora_telemetry import __version__, config


def _sglang_version() -> str:
    try:
        return version("sglang")
    except PackageNotFoundError:
        return "not installed"


def run(console: Console) -> int:
    """Print the report; exit code 1 when something would keep telemetry from working."""
    console.print(f"lora_telemetry {__version__}, sglang {_sglang_version()}")
    plugins = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    console.print(f"entry point: {plugins.get('lora_telemetry', '[red]not registered[/red]')}")
    whitelist = os.environ.get("SGLANG_PLUGINS")
    if whitelist and "lora_telemetry" not in whitelist.split(","):
        console.print(f"[yellow]SGLANG_PLUGINS={whitelist} does not include lora_telemetry: it will not load[/yellow]")
    try:
        cfg = config.read()
    except config.ConfigError as error:
        console.print(f"[red]configuration error:[/red] {error}")
        return 1
    console.print(f"enabled: {cfg.enabled}; adapter label cap: {cfg.max_adapter_labels}; "
                  f"logs: {cfg.log_format} to {cfg.log_file or 'stderr'}; traces: {'on' if cfg.traces else 'off'}")
    console.print(f"metrics: on SGLang's /metrics with --enable-metrics; multiprocess dir: "
                  f"{os.environ.get('PROMETHEUS_MULTIPROC_DIR') or '(SGLang makes a temporary one)'}; "
                  f"in-process exporter port: {cfg.metrics_port or 'off (LORA_TELEMETRY_METRICS_PORT)'}")
    if _sglang_version() == "not installed":
        return 1
    warnings.filterwarnings("ignore")  # SGLang's import-time notes about GPU-only features
    from lora_telemetry import hooks

    table = Table(title="hooks")
    for column in ("hook", "target", "status"):
        table.add_column(column)
    missing = 0
    for spec in hooks.DECLARED:
        found = hooks.target_exists(spec.target)
        missing += not found
        table.add_row(spec.name, spec.target, "[green]found[/green]" if found else "[red]missing[/red]")
    console.print(table)
    if missing:
        console.print(f"[yellow]{missing} hook target(s) missing: those hooks stay off, the rest work[/yellow]")
    return 1 if missing else 0
