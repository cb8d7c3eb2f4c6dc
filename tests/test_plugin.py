"""The plugin on a real server: loaded through its entry point in every SGLang process."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.conftest import generate, lora_paths, post, running_server

pytestmark = pytest.mark.server
PROMPT = "select count from the adapter pool where"


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    report = tmp / "processes.txt"
    multiproc = tmp / "prometheus"
    multiproc.mkdir()
    flags = ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql", "chat", "code"])]
    env = {"LORA_TELEMETRY_PROCESS_REPORT": str(report), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with running_server(bed, flags, env=env, tmp=tmp) as server:
        server.report = report
        server.multiproc = multiproc
        yield server


def test_plugin_runs_in_every_sglang_process(server):
    main = psutil.Process(server.process.pid)
    children = [p for p in main.children(recursive=True) if "sglang::" in " ".join(p.cmdline())]
    roles = {" ".join(p.cmdline()).split("sglang::")[1].split("_")[0].split()[0] for p in children}
    assert {"scheduler", "detokenizer"} <= roles
    reported = {int(line) for line in server.report.read_text().split()}
    assert {main.pid, *(p.pid for p in children)} <= reported


def test_plugin_reports_every_hook_active(server):
    from lora_telemetry.scrape import Metrics

    active = Metrics.fetch(server.url).by("sglang_lora_telemetry_hooks_active", "hook")
    assert active and all(value == 1 for value in active.values())


def test_adapters_change_the_output(server):
    outputs = {name: generate(server, name, PROMPT, tokens=12)["text"] for name in ("qa", "sql", "chat", None)}
    assert len(set(outputs.values())) == len(outputs), outputs


def test_same_adapter_same_output_alone_or_batched(server):
    names = ["qa", "sql", None, "chat", "qa"]
    alone = [generate(server, name, PROMPT, tokens=12)["text"] for name in names]
    status, batched = post(server, "/generate", {
        "text": [PROMPT] * len(names), "lora_path": names,
        "sampling_params": {"max_new_tokens": 12, "temperature": 0}})
    assert status == 200
    assert [item["text"] for item in batched] == alone


def test_unknown_adapter_gets_400_and_serving_goes_on(server):
    status, body = post(server, "/generate", {"text": PROMPT, "lora_path": "no-such-adapter",
                                              "sampling_params": {"max_new_tokens": 4}})
    assert status == 400
    assert "no-such-adapter" in body["error"]["message"]
    assert generate(server, "qa")["meta_info"]["completion_tokens"] == 4


def test_exposed_families_match_the_spec(server):
    import re

    from lora_telemetry.scrape import Metrics
    from tests.spec import spec_families

    generate(server, "qa")
    text = Metrics.fetch(server.url).text
    spec = spec_families()
    types = dict(re.findall(r"^# TYPE (sglang_lora_\S+) (\S+)$", text, re.M))
    assert types and all(spec[name][0] == kind for name, kind in types.items())
    for sample in Metrics(text).samples:
        if not sample.name.startswith("sglang_lora_"):
            continue
        family = next(n for n in types if sample.name == n or sample.name in (n + "_bucket", n + "_count", n + "_sum"))
        assert set(sample.labels) - {"le", "dp_rank"} == set(spec[family][1]), sample
    assert any(s.name.startswith("sglang:") for s in Metrics(text).samples)  # SGLang's own series are still there


def test_sglangs_own_series_are_served_unchanged_beside_ours(server):
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    from lora_telemetry.scrape import Metrics

    def series(metrics: Metrics) -> set:
        return {(s.name, tuple(sorted(s.labels.items()))) for s in metrics.samples if s.name.startswith("sglang:")}

    def stock() -> Metrics:  # what SGLang's handler renders on its own
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(server.multiproc))
        return Metrics(generate_latest(registry).decode())

    generate(server, "sql")
    deadline = time.monotonic() + 10
    while True:  # SGLang's processes add series to their files after the request returns: compare once settled
        before, served, after = stock(), Metrics.fetch(server.url), stock()
        if series(before) == series(after) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert series(served) == series(after) and series(after)
    assert any(s.name.startswith("sglang_lora_") for s in served.samples)


@pytest.mark.parametrize(("env", "log_line"), [
    ({"LORA_TELEMETRY_ENABLED": "0"}, None),
    ({"LORA_TELEMETRY_MAX_ADAPTER_LABELS": "lots"},
     "lora_telemetry is off: LORA_TELEMETRY_MAX_ADAPTER_LABELS='lots': expected an integer"),
], ids=["switched off", "bad value"])
def test_a_server_without_the_plugin_serves_and_exposes_none_of_our_series(bed, tmp_path, env, log_line):
    from lora_telemetry.scrape import Metrics

    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa"])], env=env,
                        tmp=tmp_path) as server:
        assert generate(server, "qa")["meta_info"]["completion_tokens"] == 4  # the test-bed plugin still runs
        metrics = Metrics.fetch(server.url)
        log = server.log_path.read_text()
    assert not [s for s in metrics.samples if s.name.startswith("sglang_lora_")]
    assert any(s.name.startswith("sglang:") for s in metrics.samples)
    if log_line:
        assert log.count(log_line) == 1 and "Failed to execute general plugin" not in log
    else:
        assert "lora_telemetry is off" not in log
