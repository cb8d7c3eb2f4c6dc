"""Server mode: adapters found by name in LORA_TELEMETRY_ADAPTER_DIR load on their first request."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from lora_telemetry.testbed import SERVED_MODEL_NAME
from tests.conftest import adapters_with_a_planted_one, generate, metrics_when, post, running_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def adapter_dir(bed, tmp_path_factory):
    return adapters_with_a_planted_one(bed, tmp_path_factory.mktemp("on_demand"))


@pytest.fixture(scope="module")
def server(bed, adapter_dir):
    env = {"LORA_TELEMETRY_ADAPTER_DIR": str(adapter_dir)}
    with running_server(bed, ["--max-loras-per-batch", "3"], env=env, tmp=adapter_dir.parent) as server:
        yield server


def _load_log_lines(server, name: str) -> int:
    """SGLang's own record of load requests, independent of our counters."""
    return server.log_path.read_text().count(f"Start load Lora adapter. Lora name={name},")


def test_first_generate_request_loads_the_adapter(server):
    assert generate(server, "qa")["meta_info"]["completion_tokens"] == 4
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_loads_total", lora_name="qa") == 1)
    assert m.total("sglang_lora_adapter_loads_total", lora_name="qa", trigger="on_demand", result="success") == 1
    assert m.total("sglang_lora_cache_lookups_total", lora_name="qa", tier="host", result="miss") == 1
    assert _load_log_lines(server, "qa") == 1


def test_openai_model_name_loads_the_adapter(server):
    status, body = post(server, "/v1/completions", {"model": f"{SERVED_MODEL_NAME}:sql", "prompt": "the pool",
                                                    "max_tokens": 3, "temperature": 0})
    assert status == 200, body
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_loads_total", lora_name="sql") == 1)
    assert m.total("sglang_lora_adapter_loads_total", lora_name="sql", trigger="on_demand", result="success") == 1


def test_concurrent_requests_load_once(server):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: generate(server, "chat", tokens=3), range(16)))
    assert len(results) == 16 and len({r["text"] for r in results}) == 1
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", lora_name="chat") == 16)
    assert m.total("sglang_lora_adapter_loads_total", lora_name="chat") == 1
    host = m.by("sglang_lora_cache_lookups_total", "result", lora_name="chat", tier="host")
    assert host.get("miss", 0) >= 1 and sum(host.values()) == 16  # those that arrived before the load finished
    assert _load_log_lines(server, "chat") == 1


@pytest.mark.parametrize("name", ["../planted", "escape", "/etc", "..", "qa/../sql", "no-such-adapter"])
def test_names_outside_the_directory_are_rejected(server, name):
    status, body = post(server, "/generate", {"text": "x", "lora_path": name,
                                              "sampling_params": {"max_new_tokens": 2}})
    assert status == 400, body
    assert _load_log_lines(server, name) == 0
    assert json.dumps(name)[1:-1] not in metrics_when(server, lambda m: True).text
