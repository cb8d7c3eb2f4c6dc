"""``lora-telemetry doctor``: is the plugin installed, is this SGLang supported, and will every
hook find its target? Plain text (or ``--json``), so it runs on the core install."""

from __future__ import annotations

import json
import os
import warnings
from importlib.metadata import entry_points
from typing import Any

from lora_telemetry import compat, config
from lora_telemetry.version import __version__


def report() -> dict[str, Any]:
    """Everything the check found; ``ok`` is False when something would keep telemetry from working."""
    sglang = compat.sglang_version()
    plugins = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    whitelist = os.environ.get("SGLANG_PLUGINS")
    out: dict[str, Any] = {
        "lora_telemetry": __version__, "sglang": sglang, "supported_sglang": compat.SUPPORTED,
        "sglang_supported": compat.supported(sglang), "entry_point": plugins.get("lora_telemetry"),
        "whitelisted": not whitelist or "lora_telemetry" in whitelist.split(","), "problems": [],
    }
    try:
        cfg = config.read()
        out["config"] = {"enabled": cfg.enabled, "max_adapter_labels": cfg.max_adapter_labels,
                         "log_format": cfg.log_format, "log_file": str(cfg.log_file or "stderr"),
                         "traces": cfg.traces, "metrics_port": cfg.metrics_port,
                         "adapter_dir": str(cfg.adapter_dir) if cfg.adapter_dir else None,
                         "access_log": str(cfg.access_log) if cfg.access_log else None,
                         "plan": str(os.environ.get(config.PREFIX + "PLAN")) if cfg.plan else None,
                         "priorities": len(cfg.priorities)}
    except config.ConfigError as error:
        out["problems"].append(f"configuration: {error}")
    if sglang is None:
        out["problems"].append("sglang is not installed in this environment")
    elif not out["sglang_supported"]:
        out["problems"].append(f"sglang {sglang} is outside the tested range {compat.SUPPORTED}")
    if out["entry_point"] is None:
        out["problems"].append("the sglang.srt.plugins entry point is not registered (reinstall the package)")
    if not out["whitelisted"]:
        out["problems"].append(f"SGLANG_PLUGINS={whitelist} does not include lora_telemetry: it will not load")
    out["hooks"] = _hooks(cfg) if sglang is not None and "config" in out else []  # off on bad config
    for hook in out["hooks"]:
        if not hook["found"] and hook["wanted"]:
            out["problems"].append(f"hook {hook['hook']} is off ({hook['target']} is missing): lost {hook['loses']}")
    out["ok"] = not out["problems"]
    return out


def _hooks(cfg: config.Config) -> list[dict[str, Any]]:
    """Every hook; ``wanted`` is False for a feature the configuration leaves off (not installed)."""
    warnings.filterwarnings("ignore")  # SGLang's import-time notes about GPU-only features
    from lora_telemetry import hooks

    return [{"hook": spec.name, "target": spec.target, "found": hooks.target_exists(spec.target),
             "loses": spec.loses, "wanted": spec.wanted is None or spec.wanted(cfg)} for spec in hooks.DECLARED]


def run(as_json: bool = False) -> int:
    """Print the report; exit status 1 when something is missing or unsupported."""
    found = report()
    if as_json:
        print(json.dumps(found, indent=2))
        return 0 if found["ok"] else 1
    print(f"lora_telemetry {found['lora_telemetry']}, sglang {found['sglang'] or 'not installed'} "
          f"({'supported' if found['sglang_supported'] else 'not in the tested range'} {compat.SUPPORTED})")
    print(f"entry point: {found['entry_point'] or 'not registered'}")
    if "config" in found:
        c = found["config"]
        print(f"enabled: {c['enabled']}; adapter label cap: {c['max_adapter_labels']}; logs: {c['log_format']} to "
              f"{c['log_file']}; traces: {'on' if c['traces'] else 'off'}; in-process exporter port: "
              f"{c['metrics_port'] or 'off'}")
        if c["plan"] or c["priorities"]:
            print(f"plan: {c['plan'] or 'none'}; adapter priorities for {c['priorities'] or 'no'} adapters "
                  "(the pool evicts the lowest first)")
    if found["hooks"]:
        width = max(len(h["hook"]) for h in found["hooks"])
        print("hooks:")
        for h in found["hooks"]:
            state = ("found  " if h["found"] else "MISSING") + ("" if h["wanted"] else " (off until asked for)")
            print(f"  {h['hook']:<{width}}  {state}  {h['target']}")
    for problem in found["problems"]:
        print(f"problem: {problem}")
    print("ok" if found["ok"] else f"{len(found['problems'])} problem(s)")
    return 0 if found["ok"] else 1
