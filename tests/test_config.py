"""Configuration: defaults, parsing, and one clear error naming a bad variable."""

from __future__ import annotations

import pytest

from lora_telemetry import config


def test_defaults(monkeypatch):
    for name in ("ENABLED", "MAX_ADAPTER_LABELS", "LOG_FORMAT", "METRICS_PORT", "ADAPTER_DIR", "TRACES",
                 "THRASH_WINDOW_S"):
        monkeypatch.delenv(config.PREFIX + name, raising=False)
    cfg = config.read()
    assert cfg.enabled and cfg.max_adapter_labels == 10_000 and cfg.top_adapters == 50
    assert cfg.log_format == "json" and cfg.thrash_window_s == 10
    assert cfg.metrics_port is None and cfg.adapter_dir is None and not cfg.traces


def test_values_are_parsed(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_ENABLED", "off")
    monkeypatch.setenv("LORA_TELEMETRY_MAX_ADAPTER_LABELS", "50")
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FORMAT", "Console")
    monkeypatch.setenv("LORA_TELEMETRY_METRICS_PORT", "9400")
    monkeypatch.setenv("LORA_TELEMETRY_ADAPTER_DIR", str(tmp_path))
    monkeypatch.setenv("LORA_TELEMETRY_FAULT_HOOKS", "a, b")
    monkeypatch.setenv("LORA_TELEMETRY_THRASH_WINDOW_S", "2.5")
    cfg = config.read()
    assert cfg.thrash_window_s == 2.5
    assert not cfg.enabled and cfg.max_adapter_labels == 50 and cfg.log_format == "console"
    assert cfg.metrics_port == 9400 and cfg.adapter_dir == tmp_path and cfg.fault_hooks == {"a", "b"}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ENABLED", "maybe", "expected one of 1/0"),
    ("MAX_ADAPTER_LABELS", "many", "expected an integer"),
    ("MAX_ADAPTER_LABELS", "0", "from 1 to"),
    ("LOG_FORMAT", "xml", "json, console"),
    ("METRICS_PORT", "70000", "from 1 to 65535"),
    ("ADAPTER_DIR", "/no/such/dir", "not a directory"),
    ("THRASH_WINDOW_S", "soon", "a number of seconds"),
    ("THRASH_WINDOW_S", "0", "more than 0"),
])
def test_bad_value_names_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(config.PREFIX + name, value)
    with pytest.raises(config.ConfigError) as error:
        config.read()
    assert f"LORA_TELEMETRY_{name}=" in str(error.value) and message in str(error.value)
