"""Telemetry must never cost a request, lose a count, or let input run wild (real servers)."""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from lora_telemetry.scrape import Metrics
from lora_telemetry.testbed import SERVED_MODEL_NAME
from tests.conftest import (
    adapters_with_a_planted_one,
    generate,
    lora_paths,
    metrics_when,
    post,
    running_server,
    unexpected_errors,
)
from tests.dashboards.prometheus import promtool

pytestmark = pytest.mark.server
HOSTILE = ['quo"te', "back\\slash", "new\nline", "ünïcødé-名前", "..", "../planted", "/etc/passwd", "x" * 300,
           "tab\there", "", " ", "__base__", "__other__"]


def test_state_directory_that_cannot_be_made_disables_cleanly_with_one_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = ("import logging; logging.basicConfig(); from lora_telemetry import plugin; plugin.activate(); "
            "print('served')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(blocker)})
    assert run.returncode == 0 and "served" in run.stdout
    warnings = [line for line in run.stderr.splitlines() if "lora_telemetry" in line]
    assert len(warnings) == 1 and "is off: cannot set up its state directory" in warnings[0], run.stderr
    assert "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def hostile_server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    adapters = adapters_with_a_planted_one(bed, tmp)
    control = tmp / "control.txt"
    control.write_text("read me")
    for path in [*(tmp / "planted").iterdir(), control]:
        os.utime(path, (0, path.stat().st_mtime))  # atime in 1970: any read moves it (relatime)
    env = {"LORA_TELEMETRY_ADAPTER_DIR": str(adapters), "LORA_TELEMETRY_LOG_FILE": str(tmp / "events.jsonl")}
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql"])], env=env,
                        tmp=tmp) as server:
        server.tmp = tmp
        yield server


def test_ten_thousand_random_names_are_rejected_under_one_series(hostile_server):
    server = hostile_server
    main = psutil.Process(server.process.pid)
    rng = random.Random(5)
    names = ["".join(rng.choices(string.ascii_letters + string.digits, k=16)) for _ in range(10_000)]
    for name in names[:200]:  # warm SGLang's own paths before measuring memory
        post(server, "/generate", {"text": "x", "lora_path": name, "sampling_params": {"max_new_tokens": 1}})
    rss_before = main.memory_info().rss

    def reject(name: str) -> int:
        return post(server, "/generate", {"text": "x", "lora_path": name, "sampling_params": {"max_new_tokens": 1}})[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(pool.map(reject, names[200:]))
    assert statuses == {400: 9_800}
    growth = main.memory_info().rss - rss_before
    metrics = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", outcome="rejected") == 10_000)
    assert metrics.by("sglang_lora_requests_total", "lora_name", outcome="rejected") == {"__unknown__": 10_000}
    seen = {s.labels["lora_name"] for s in metrics.samples if "lora_name" in s.labels}
    assert seen <= {"qa", "sql", "__base__", "__unknown__"}
    assert growth < 10 * 2**20, f"main process grew by {growth / 2**20:.1f} MiB"
    assert generate(server, "qa")["meta_info"]["completion_tokens"] == 4


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_are_rejected_and_exposition_stays_valid(hostile_server, name):
    status, _ = post(hostile_server, "/generate", {"text": "x", "lora_path": name,
                                                   "sampling_params": {"max_new_tokens": 1}})
    assert status in (200, 400)
    if name in ("", " "):
        return  # SGLang treats an empty adapter as the base model
    assert status == 400
    status, _ = post(hostile_server, "/v1/completions", {"model": f"{SERVED_MODEL_NAME}:{name}", "prompt": "x",
                                                         "max_tokens": 1})
    assert status == 400


def test_exposition_is_valid_after_hostile_names(hostile_server):
    text = Metrics.fetch(hostile_server.url).text
    result = promtool("check", "metrics", stdin=text)
    assert not [line for line in (result.stdout + result.stderr).splitlines() if "sglang_lora" in line]
    Metrics(text)  # parses


def test_no_file_outside_the_adapter_directory_is_read(hostile_server):
    tmp = hostile_server.tmp
    for name in ("../planted", "planted", "escape", "/" + str(tmp / "planted")):
        post(hostile_server, "/generate", {"text": "x", "lora_path": name, "sampling_params": {"max_new_tokens": 1}})
    control = tmp / "control.txt"
    control.read_text()
    if control.stat().st_atime == 0:
        pytest.skip("this file system does not record reads (noatime)")
    for path in (tmp / "planted").iterdir():
        assert path.stat().st_atime == 0, f"{path} was read"


def test_concurrent_clients_with_loads_and_unloads_count_exactly(bed, tmp_path):
    names = ["qa", "sql", "chat", "code"]
    clients, per_client = 64, 6
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, names)], tmp=tmp_path) as server:
        sent, stop = Counter(), threading.Event()
        lock = threading.Lock()

        def client(i: int) -> None:
            rng = random.Random(i)
            for j in range(per_client):
                name = rng.choice(names + [None, "math"])
                if rng.random() < 0.3:
                    status, body = post(server, "/v1/completions", {
                        "model": SERVED_MODEL_NAME + (f":{name}" if name else ""), "prompt": f"c{i} {j}",
                        "max_tokens": 3})
                else:
                    status, body = post(server, "/generate", {"text": f"c{i} {j}", "lora_path": name,
                                                              "sampling_params": {"max_new_tokens": 3}})
                with lock:
                    sent[(name or "__base__", status)] += 1

        def churn() -> None:
            path = str(bed.adapters()["math"])
            while not stop.is_set():
                post(server, "/load_lora_adapter", {"lora_name": "math", "lora_path": path})
                time.sleep(0.2)
                post(server, "/unload_lora_adapter", {"lora_name": "math"})
                time.sleep(0.2)

        time.sleep(2)  # past SGLang's own start-up chatter (its post-warmup freeze_gc can log a traceback)
        log_start = len(server.log_path.read_text())
        churner = threading.Thread(target=churn)
        churner.start()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        stop.set()
        churner.join()
        finished = Counter()
        for (name, status), count in sent.items():
            if status == 200:
                finished[name] += count
        metrics = metrics_when(server, lambda m: m.by("sglang_lora_requests_total", "lora_name",
                                                       outcome="finished") == dict(finished))
        assert metrics.by("sglang_lora_requests_total", "lora_name", outcome="finished") == dict(finished)
        rejected = sum(count for (_, status), count in sent.items() if status != 200)
        assert metrics.total("sglang_lora_requests_total", outcome="rejected") == rejected
        assert not any(metrics.by("sglang_lora_requests_in_flight", "lora_name").values())
        assert not any(metrics.by("sglang_lora_telemetry_errors_total", "hook").values())
        log = server.log_path.read_text()[log_start:]
    assert unexpected_errors(log) == []


def test_restart_with_the_same_metrics_directory_drops_the_dead_servers_gauges(bed, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql"])], env=env,
                        tmp=tmp_path) as first:
        for name in ("qa", "sql", "qa"):
            generate(first, name)
        before = metrics_when(first, lambda m: m.total("sglang_lora_adapter_resident", tier="gpu", lora_name="sql"))
        assert before.total("sglang_lora_requests_total", lora_name="qa") == 2
        os.killpg(first.process.pid, signal.SIGKILL)  # a crash: nothing cleans up
        first.process.wait()
    time.sleep(1)
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ["chat"])], env=env,
                        tmp=tmp_path) as second:
        generate(second, "chat")
        after = metrics_when(second, lambda m: m.total("sglang_lora_requests_total", lora_name="chat") == 1)
    residents = {s.labels["lora_name"] for s in after.select("sglang_lora_adapter_resident")}
    assert residents == {"chat", "__base__"}
    assert after.total("sglang_lora_requests_total", lora_name="qa") == 0  # counters restart: rate() sees a reset
    assert after.total("sglang_lora_requests_total", lora_name="chat") == 1
    assert json.dumps(after.by("sglang_lora_adapters_loaded", "dp_rank")) == '{"0": 1.0}'
