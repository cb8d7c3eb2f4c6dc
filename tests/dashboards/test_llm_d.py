"""The llm-d picker config is well formed, and the picker's reading rules (tests/llm_d_picker.py)
behave as llm-d-router's own: newest series by value, comma lists trimmed, integer max_lora."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.llm_d_picker import lora_state, parse_spec

PICKER = Path(__file__).resolve().parents[2] / "dashboards" / "llm-d" / "endpoint-picker.yaml"
TEXT = """# TYPE sglang_lora_requests_info gauge
sglang_lora_requests_info{running_lora_adapters="qa, sql",waiting_lora_adapters="",max_lora="4"} 1700000001.0
sglang_lora_requests_info{running_lora_adapters="chat",waiting_lora_adapters="code,",max_lora="4"} 1700000002.5
"""


def test_the_config_names_every_sglang_spec_and_the_lora_scorer():
    config = yaml.safe_load(PICKER.read_text())
    assert config["kind"] == "EndpointPickerConfig"
    [extractor] = [p for p in config["plugins"] if p["type"] == "core-metrics-extractor"]
    [sglang] = extractor["parameters"]["engineConfigs"]
    assert sglang["name"] == "sglang" and sglang["loraSpec"] == "sglang_lora_requests_info"
    for key in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "cacheBlockSizeSpec", "cacheNumBlocksSpec"):
        assert parse_spec(sglang[key])[0].startswith("sglang:"), key
    profile_plugins = {p["pluginRef"] for p in config["schedulingProfiles"][0]["plugins"]}
    assert "lora-affinity-scorer" in profile_plugins <= {p["type"] for p in config["plugins"]}


def test_the_newest_series_is_read_and_its_lists_split():
    state = lora_state(TEXT, "sglang_lora_requests_info")
    assert (state.active, state.waiting, state.max_active) == ({"chat"}, {"code"}, 4)
    assert lora_state(TEXT, 'sglang_lora_requests_info{max_lora="8"}') is None
    assert lora_state("", "sglang_lora_requests_info") is None


def test_specs_and_values_the_picker_refuses():
    assert parse_spec("custom{status=waiting}") == ("custom", {"status": "waiting"})
    with pytest.raises(ValueError):
        parse_spec("9bad")
    with pytest.raises(ValueError, match="max_lora"):
        lora_state(TEXT.replace('max_lora="4"} 1700000002.5', 'max_lora="x"} 1700000002.5'),
                   "sglang_lora_requests_info")
