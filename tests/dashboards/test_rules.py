"""Rules, alerts and the scrape config pass promtool; each alert fires and stays quiet on
hand-made series; the committed dashboard is what its generator writes and covers everything."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.dashboards.prometheus import promtool
from tests.spec import spec_families

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"


def test_rules_pass_promtool_check():
    result = promtool("check", "rules", str(DASHBOARDS / "prometheus" / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_scrape_config_passes_promtool_check():
    result = promtool("check", "config", str(DASHBOARDS / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests():
    result = promtool("test", "rules", str(DASHBOARDS / "prometheus" / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tests = (DASHBOARDS / "prometheus" / "rules_test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", (DASHBOARDS / "prometheus" / "rules.yml").read_text())
    for alert in alerts:
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", tests)
        assert "[]" in [c.strip() for c in cases] and any(c.strip() == "" for c in cases), alert


def test_every_alert_tells_the_operator_what_to_do():
    rules = (DASHBOARDS / "prometheus" / "rules.yml").read_text()
    assert rules.count("- alert:") == 8
    assert rules.count("summary:") == 8 and rules.count("description:") == 8 and rules.count("for:") == 8


def test_committed_dashboard_is_current():
    generated = subprocess.run([sys.executable, str(DASHBOARDS / "grafana" / "generate.py")], capture_output=True,
                               text=True, cwd="/tmp")
    assert generated.returncode == 0, generated.stderr
    committed = json.loads((DASHBOARDS / "grafana" / "lora-telemetry.json").read_text())
    sys.path.insert(0, str(DASHBOARDS / "grafana"))
    import generate

    assert committed == generate.dashboard()


def _panels() -> list[dict]:
    return [p for p in json.loads((DASHBOARDS / "grafana" / "lora-telemetry.json").read_text())["panels"]
            if p["type"] != "row"]


def test_dashboard_has_a_panel_for_every_metric_family():
    exprs = " ".join(t["expr"] for p in _panels() for t in p["targets"])
    for family in spec_families():
        assert family in exprs, family


def test_dashboard_variables_units_and_hottest_table():
    dashboard = json.loads((DASHBOARDS / "grafana" / "lora-telemetry.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("model", "instance", "lora_name"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
    units = {p["fieldConfig"]["defaults"]["unit"] for p in _panels()}
    assert {"s", "bytes", "percentunit", "reqps"} <= units
    assert any(p["title"] == "Hottest adapters" and p["type"] == "table" for p in _panels())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Traffic per adapter", "Latency per adapter", "Cache and pool", "Fleet (replicas behind a gateway)",
                    "Lifecycle", "Memory", "Telemetry health"]
    [matrix] = [p for p in _panels() if p["title"].startswith("Resident where")]
    grouping = matrix["transformations"][0]["options"]
    assert (grouping["rowField"], grouping["columnField"]) == ("instance", "lora_name")
    assert dashboard["uid"] == "lora-telemetry"
