"""Request-path series on a real server, exact against what the clients saw and sent."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter

import pytest

from lora_telemetry.testbed import SERVED_MODEL_NAME
from tests.conftest import lora_paths, metrics_when, post, running_server

pytestmark = pytest.mark.server
BASE = "__base__"


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("requests")
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql", "chat"])], tmp=tmp) as s:
        yield s


class Ledger:
    """What the clients sent and got back, per adapter: the independent count."""

    def __init__(self) -> None:
        self.finished, self.prompt, self.generated = Counter(), Counter(), Counter()

    def add(self, name: str | None, prompt_tokens: int, completion_tokens: int) -> None:
        key = name or BASE
        self.finished[key] += 1
        self.prompt[key] += prompt_tokens
        self.generated[key] += completion_tokens


def _generate(server, ledger: Ledger, name: str | None, text: str, tokens: int) -> None:
    status, body = post(server, "/generate", {"text": text, "lora_path": name,
                                              "sampling_params": {"max_new_tokens": tokens, "temperature": 0}})
    assert status == 200, body
    ledger.add(name, body["meta_info"]["prompt_tokens"], body["meta_info"]["completion_tokens"])


def _stream(server, ledger: Ledger, name: str, text: str, tokens: int) -> None:
    request = urllib.request.Request(server.url + "/generate", data=json.dumps({
        "text": text, "lora_path": name, "stream": True,
        "sampling_params": {"max_new_tokens": tokens, "temperature": 0}}).encode(),
        headers={"Content-Type": "application/json"})
    last = None
    with urllib.request.urlopen(request, timeout=60) as response:
        for line in response:
            line = line.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]":
                last = json.loads(line[5:])
    ledger.add(name, last["meta_info"]["prompt_tokens"], last["meta_info"]["completion_tokens"])


def _openai(server, ledger: Ledger, path: str, name: str | None, body: dict) -> None:
    model = SERVED_MODEL_NAME + (f":{name}" if name else "")
    status, response = post(server, path, {"model": model, "temperature": 0, **body})
    assert status == 200, response
    ledger.add(name, response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"])


@pytest.fixture(scope="module")
def workload(server) -> Ledger:
    ledger = Ledger()
    for name, text, tokens in [("qa", "the pool", 5), ("qa", "select count from", 7), ("sql", "where order", 3),
                               (None, "the base model", 6), ("chat", "one base model", 4), (None, "x", 2)]:
        _generate(server, ledger, name, text, tokens)
    status, batch = post(server, "/generate", {
        "text": ["a b c", "d e", "the adapter"], "lora_path": ["qa", "chat", None],
        "sampling_params": {"max_new_tokens": 5, "temperature": 0}})
    assert status == 200
    for name, item in zip(["qa", "chat", None], batch, strict=True):
        ledger.add(name, item["meta_info"]["prompt_tokens"], item["meta_info"]["completion_tokens"])
    _stream(server, ledger, "sql", "stream this please", 6)
    for name in ("sql", None):
        _openai(server, ledger, "/v1/completions", name, {"prompt": "complete the query", "max_tokens": 5})
    for name in ("chat", "qa"):
        _openai(server, ledger, "/v1/chat/completions", name,
                {"messages": [{"role": "user", "content": "hello adapter"}], "max_tokens": 4})
    with urllib.request.urlopen(server.url + "/health_generate", timeout=60) as response:
        assert response.status == 200  # SGLang's own health check: not user traffic
    return ledger


def test_finished_requests_per_adapter_equal_the_clients_count(server, workload):
    m = metrics_when(server, lambda m: m.by("sglang_lora_requests_total", "lora_name", outcome="finished")
                     == dict(workload.finished))
    assert m.by("sglang_lora_requests_total", "lora_name", outcome="finished") == dict(workload.finished)


def test_token_counters_equal_the_sums_sglang_returned(server, workload):
    m = metrics_when(server, lambda m: True)
    assert m.by("sglang_lora_prompt_tokens_total", "lora_name") == dict(workload.prompt)
    assert m.by("sglang_lora_generation_tokens_total", "lora_name") == dict(workload.generated)


def test_latency_histograms_count_each_finished_request(server, workload):
    m = metrics_when(server, lambda m: True)
    for family in ("sglang_lora_time_to_first_token_seconds", "sglang_lora_e2e_request_latency_seconds"):
        assert m.by(family + "_count", "lora_name") == dict(workload.finished), family
        assert all(v > 0 for v in m.by(family + "_sum", "lora_name").values())


def test_in_flight_returns_to_zero(server, workload):
    m = metrics_when(server, lambda m: True)
    in_flight = m.by("sglang_lora_requests_in_flight", "lora_name")
    assert set(in_flight) == set(workload.finished) and not any(in_flight.values())


def test_host_lookups_are_hits_for_loaded_adapters(server, workload):
    m = metrics_when(server, lambda m: True)
    expected = {name: n for name, n in workload.finished.items() if name != BASE}
    assert m.by("sglang_lora_cache_lookups_total", "lora_name", tier="host", result="hit") == expected
    assert m.total("sglang_lora_cache_lookups_total", tier="host", result="miss") == 0


def test_unknown_names_are_rejected_under_one_series(server, workload):
    for name in ("ghost", 'quo"te\\back', "../../etc/passwd"):
        status, _ = post(server, "/generate", {"text": "x", "lora_path": name,
                                               "sampling_params": {"max_new_tokens": 2}})
        assert status == 400
    status, _ = post(server, "/v1/completions", {"model": f"{SERVED_MODEL_NAME}:ghost2", "prompt": "x",
                                                 "max_tokens": 2})
    assert status == 400
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", outcome="rejected") == 4)
    assert m.by("sglang_lora_requests_total", "lora_name", outcome="rejected") == {"__unknown__": 4}
    assert "ghost" not in m.text and "passwd" not in m.text and "quo" not in m.text


def test_aborted_request_counts_as_aborted(server, workload):
    done = threading.Event()

    def long_request() -> None:
        post(server, "/generate", {"text": "a long answer", "lora_path": "sql", "rid": "abort-me",
                                   "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}})
        done.set()

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)
    assert post(server, "/abort_request", {"rid": "abort-me"})[0] == 200
    thread.join(60)
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", lora_name="sql", outcome="aborted") == 1)
    assert m.total("sglang_lora_requests_total", lora_name="sql", outcome="aborted") == 1
    assert m.total("sglang_lora_requests_total", lora_name="sql", outcome="finished") == workload.finished["sql"]
    assert m.total("sglang_lora_requests_in_flight", lora_name="sql") == 0
