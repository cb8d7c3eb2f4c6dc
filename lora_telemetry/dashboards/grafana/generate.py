"""Writes lora-telemetry.json, the Grafana dashboard, from the panel list below.

Run ``python dashboards/grafana/generate.py`` after changing a panel; a test checks that the
committed JSON is what this script writes, and another runs every panel's query against a
real Prometheus that scraped a real server.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("lora-telemetry.json")
UID = "lora-telemetry"
SERVER = 'instance=~"$instance", model=~"$model"'
ADAPTER = SERVER + ', lora_name=~"$lora_name"'
RATE = "[$__rate_interval]"
GPU = ADAPTER + ', tier="gpu"'
GPU_HIT = GPU + ', result="hit"'
# Both servers of a prefill/decode pair see each request: request-path series count on the decode side.
NOT_PREFILL = ' unless on (instance) sglang_lora_telemetry_info{role="prefill"}'


def _rate(metric: str, by: str, where: str = ADAPTER, served: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{{{where}}}{RATE}){served})"


def _served_rate(metric: str, by: str) -> str:
    """A request-path rate, each request counted once across a prefill/decode pair."""
    return _rate(metric, by, ADAPTER, NOT_PREFILL)


def _quantile(q: float, metric: str, by: str, where: str = ADAPTER, served: str = "") -> str:
    keep = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) (rate({metric}_bucket{{{where}}}{RATE}){served}))"


def _phase_means() -> str:
    """Mean seconds of each TTFT phase per adapter, for the ten adapters with the slowest TTFT p95."""
    sums = f"sum by (lora_name, phase) (rate(sglang_lora_ttft_phase_seconds_sum{{{ADAPTER}}}{RATE}))"
    counts = f"sum by (lora_name, phase) (rate(sglang_lora_ttft_phase_seconds_count{{{ADAPTER}}}{RATE}))"
    slowest = f'topk(10, {_quantile(0.95, "sglang_lora_time_to_first_token_seconds", "lora_name", ADAPTER, NOT_PREFILL)})'
    return f"({sums} / {counts}) and on (lora_name) {slowest}"


def _ratio(tier: str) -> str:
    hits = f'sglang_lora_cache_lookups_total{{{ADAPTER}, tier="{tier}", result="hit"}}'
    all_ = f'sglang_lora_cache_lookups_total{{{ADAPTER}, tier="{tier}"}}'
    return f"sum by (lora_name) (rate({hits}{RATE})) / sum by (lora_name) (rate({all_}{RATE}))"


# (row title, [(panel title, unit, [(query, legend)], panel type)])
ROWS = [
    ("Traffic per adapter", [
        ("Requests per second by adapter", "reqps", [(_served_rate("sglang_lora_requests_total", "lora_name"), "{{lora_name}}")], "timeseries"),
        ("Requests by outcome", "reqps", [(_served_rate("sglang_lora_requests_total", "outcome"), "{{outcome}}")], "timeseries"),
        ("Tokens per second by adapter", "short", [
            (_served_rate("sglang_lora_prompt_tokens_total", "lora_name"), "{{lora_name}} prompt"),
            (_served_rate("sglang_lora_generation_tokens_total", "lora_name"), "{{lora_name}} generated")], "timeseries"),
        ("Requests in flight (busiest adapters, the rest as __other__)", "short", [
            (f"sum by (lora_name) (sglang_lora_requests_in_flight{{{ADAPTER}}}{NOT_PREFILL})", "{{lora_name}}")], "timeseries"),
        ("Hottest adapters", "short", [
            (f"topk(10, {_served_rate('sglang_lora_requests_total', 'lora_name')})", "requests/s"),
            (_ratio("gpu"), "gpu hit ratio"),
            (_rate("sglang_lora_pool_evictions_total", "lora_name"), "evictions/s")], "table"),
    ]),
    ("Latency per adapter", [
        ("Time to first token p50 / p95 (busiest adapters, the rest as __other__)", "s", [
            (_quantile(0.5, "sglang_lora_time_to_first_token_seconds", "lora_name", ADAPTER, NOT_PREFILL), "{{lora_name}} p50"),
            (_quantile(0.95, "sglang_lora_time_to_first_token_seconds", "lora_name", ADAPTER, NOT_PREFILL), "{{lora_name}} p95")], "timeseries"),
        ("End-to-end latency p95 (busiest adapters, the rest as __other__)", "s", [
            (_quantile(0.95, "sglang_lora_e2e_request_latency_seconds", "lora_name", ADAPTER, NOT_PREFILL), "{{lora_name}}")], "timeseries"),
        ("Where time to first token goes (10 slowest of the busiest adapters, mean per phase)", "s", [
            (_phase_means(), "{{phase}}")], "barchart"),
    ]),
    ("Cache and pool", [
        ("GPU tier hit rate (pool slot held)", "percentunit", [(_ratio("gpu"), "{{lora_name}}")], "timeseries"),
        ("Host tier hit rate (adapter loaded)", "percentunit", [(_ratio("host"), "{{lora_name}}")], "timeseries"),
        ("Slot loads, reloads for running requests (busiest adapters) and evictions per second", "ops", [
            (_rate("sglang_lora_pool_slot_loads_total", "lora_name"), "{{lora_name}} loads"),
            (_rate("sglang_lora_pool_slot_reloads_total", "lora_name"), "{{lora_name}} reloads"),
            (_rate("sglang_lora_pool_evictions_total", "lora_name"), "{{lora_name}} evictions")], "timeseries"),
        ("Slot reuse after eviction p50 / p95 (busiest adapters)", "s", [
            (_quantile(0.5, "sglang_lora_pool_reuse_seconds", "lora_name"), "{{lora_name}} p50"),
            (_quantile(0.95, "sglang_lora_pool_reuse_seconds", "lora_name"), "{{lora_name}} p95")], "timeseries"),
        ("Thrash reloads (share of slot loads)", "percentunit", [
            (f"{_rate('sglang_lora_pool_thrash_reloads_total', 'instance', SERVER)} / "
             f"{_rate('sglang_lora_pool_slot_loads_total', 'instance', SERVER)}", "{{instance}}")], "timeseries"),
        ("Slot copy time p95", "s", [
            (_quantile(0.95, "sglang_lora_pool_slot_load_seconds", "", SERVER), "p95")], "timeseries"),
        ("Slot load bandwidth (bytes copied per second of copying) and bytes per second of the busiest adapters", "Bps", [
            (f"{_rate('sglang_lora_pool_slot_load_bytes_total', 'instance', SERVER)} / "
             f"{_rate('sglang_lora_pool_slot_load_seconds_sum', 'instance', SERVER)}", "{{instance}} while copying"),
            (_rate("sglang_lora_pool_slot_load_bytes_total", "lora_name"), "{{lora_name}}")], "timeseries"),
        ("Pool slots", "short", [(f"sum by (state) (sglang_lora_pool_slots{{{SERVER}}})", "{{state}}")], "timeseries"),
        ("Adapters per forward batch", "short", [
            (_quantile(0.5, "sglang_lora_batch_adapters", "", SERVER), "p50"),
            (_quantile(0.95, "sglang_lora_batch_adapters", "", SERVER), "p95")], "timeseries"),
        ("Requests deferred at admission per second (busiest adapters)", "reqps", [
            (_rate("sglang_lora_admission_deferrals_total", "lora_name, reason"), "{{lora_name}} {{reason}}")],
         "timeseries"),
        ("Wait for admission p95 (deferred requests, busiest adapters)", "s", [
            (_quantile(0.95, "sglang_lora_admission_wait_seconds", "lora_name"), "{{lora_name}}")], "timeseries"),
        ("Requests sent back to the queue per second: retracted, preempted (busiest adapters)", "reqps", [
            (_rate("sglang_lora_requests_requeued_total", "lora_name, reason"), "{{lora_name}} {{reason}}")],
         "timeseries"),
        ("Drains: episodes per second and length p95 (adapters held back for a starving one, busiest)", "s", [
            (_rate("sglang_lora_drain_seconds_count", "lora_name"), "{{lora_name}} episodes/s"),
            (_quantile(0.95, "sglang_lora_drain_seconds", "lora_name"), "{{lora_name}} p95")], "timeseries"),
        ("DP attention: batches whose union of adapters overflowed the pool (the scheduler stopped)", "short", [
            (f"sum by (instance) (increase(sglang_lora_pool_union_overflows_total{{{SERVER}}}[1h]))", "{{instance}}")],
         "timeseries"),
        ("Running and waiting requests (busiest adapters)", "short", [
            (f"sum by (lora_name) (sglang_lora_requests_running{{{ADAPTER}}})", "{{lora_name}} running"),
            (f"sum by (lora_name) (sglang_lora_requests_waiting{{{ADAPTER}}})", "{{lora_name}} waiting")], "timeseries"),
        ("Routing info age", "s", [
            (f"time() - max by (instance) (sglang_lora_requests_info{{{SERVER}}})", "{{instance}}")], "timeseries"),
    ]),
    ("Fleet (replicas behind a gateway)", [
        ("Requests per second by instance and adapter", "reqps", [
            (_rate("sglang_lora_requests_total", "instance, lora_name"), "{{instance}} {{lora_name}}")], "timeseries"),
        ("GPU tier hit rate by instance", "percentunit", [
            (f"{_rate('sglang_lora_cache_lookups_total', 'instance', GPU_HIT)} / "
             f"{_rate('sglang_lora_cache_lookups_total', 'instance', GPU)}", "{{instance}}")], "timeseries"),
        ("Resident where: instance by adapter (1: holds a pool slot)", "short", [
            (f'max by (instance, lora_name) (sglang_lora_adapter_resident{{{ADAPTER}, tier="gpu"}})', "")], "matrix"),
        ("Replicas holding each adapter in a pool slot", "short", [
            (f'count by (lora_name) (max by (instance, lora_name) (sglang_lora_adapter_resident{{{ADAPTER}, tier="gpu"}}) > 0)',
             "{{lora_name}}")], "timeseries"),
    ]),
    ("Lifecycle", [
        ("Adapter loads by trigger and result", "ops", [
            (_rate("sglang_lora_adapter_loads_total", "trigger, result"), "{{trigger}} {{result}}")], "timeseries"),
        ("Adapter load time p95", "s", [
            (_quantile(0.95, "sglang_lora_adapter_load_seconds", "trigger", SERVER), "{{trigger}}")], "timeseries"),
        ("Adapter unloads by reason", "ops", [
            (_rate("sglang_lora_adapter_unloads_total", "reason"), "{{reason}}")], "timeseries"),
        ("Adapters loaded (host memory)", "short", [
            (f"sum by (instance) (sglang_lora_adapters_loaded{{{SERVER}}})", "{{instance}}")], "timeseries"),
        ("Adapters resident by tier", "short", [
            (f"sum by (tier) (sglang_lora_adapter_resident{{{ADAPTER}}})", "{{tier}}")], "timeseries"),
    ]),
    ("Memory", [
        ("Adapter memory by tier", "bytes", [
            (f"sum by (tier) (sglang_lora_adapter_memory_bytes{{{ADAPTER}}})", "{{tier}}")], "timeseries"),
        ("Host memory by adapter", "bytes", [
            (f'sum by (lora_name) (sglang_lora_adapter_memory_bytes{{{ADAPTER}, tier="host"}})', "{{lora_name}}")],
         "timeseries"),
        ("Pool capacity", "bytes", [
            (f"sum by (instance) (sglang_lora_pool_capacity_bytes{{{SERVER}}})", "{{instance}}")], "stat"),
    ]),
    ("Telemetry health", [
        ("Hooks attached", "short", [
            (f"min by (hook) (sglang_lora_telemetry_hooks_active{{{SERVER}}})", "{{hook}}")], "table"),
        ("Telemetry errors per second", "ops", [
            (_rate("sglang_lora_telemetry_errors_total", "hook", SERVER), "{{hook}}")], "timeseries"),
        ("Adapter names folded into __other__", "ops", [
            (f"sum (rate(sglang_lora_telemetry_label_overflow_total{{{SERVER}}}{RATE}))", "overflow")], "timeseries"),
        ("Versions", "short", [
            (f"max by (instance, version, sglang_version, role) (sglang_lora_telemetry_info{{{SERVER}}})", "")], "table"),
    ]),
]


def _variable(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {"text": ["All"], "value": ["$__all"]}, "sort": 1}


def _panel(panel_id: int, title: str, unit: str, queries: list[tuple[str, str]], kind: str, x: int, y: int) -> dict:
    table = kind in ("table", "barchart", "matrix")
    panel = {
        "id": panel_id, "type": "table" if kind == "matrix" else kind, "title": title, "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"},
                     **({"format": "table", "instant": True} if table else {"range": True})}
                    for i, (expr, legend) in enumerate(queries)],
    }
    if kind == "table":
        panel["transformations"] = [{"id": "merge", "options": {}}]
    if kind == "matrix":  # a heatmap: one row per instance, one column per adapter, coloured by value
        panel["transformations"] = [{"id": "groupingToMatrix", "options": {
            "columnField": "lora_name", "rowField": "instance", "valueField": "Value"}}]
        panel["fieldConfig"]["defaults"] |= {
            "custom": {"cellOptions": {"type": "color-background"}},
            "color": {"mode": "thresholds"},
            "thresholds": {"mode": "absolute", "steps": [{"color": "transparent", "value": None},
                                                         {"color": "green", "value": 1}]}}
    if kind == "barchart":  # one bar per adapter, its phases stacked
        panel["transformations"] = [{"id": "groupingToMatrix", "options": {
            "columnField": "phase", "rowField": "lora_name", "valueField": "Value"}}]
        panel["options"] = {"stacking": "normal", "orientation": "horizontal", "xField": "lora_name\\phase",
                            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    return panel


def dashboard() -> dict:
    panels, panel_id, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y = panel_id + 1, y + 1
        for i, (title, unit, queries, kind) in enumerate(row_panels):
            panels.append(_panel(panel_id, title, unit, queries, kind, x=8 * (i % 3), y=y + 8 * (i // 3)))
            panel_id += 1
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "uid": UID, "title": "SGLang LoRA adapters", "tags": ["sglang", "lora"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("model", "Model", "label_values(sglang_lora_telemetry_info, model)"),
            _variable("instance", "Instance", 'label_values(sglang_lora_telemetry_info{model=~"$model"}, instance)'),
            _variable("lora_name", "Adapter", 'label_values(sglang_lora_requests_total{instance=~"$instance"}, lora_name)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
