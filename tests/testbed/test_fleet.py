"""A fleet as a user starts it (``lora-telemetry testbed fleet``): two test-bed servers behind a
real SMG, mixed-adapter traffic through the gateway, and a real Prometheus scraping both replicas.
What the clients sent is what the fleet counted, per adapter; each replica keeps its own series;
the fleet's access logs replay to each replica's own gpu hits; the fleet rules give data."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lora_telemetry import testbed
from lora_telemetry.capacity.fleet import advise_fleet
from lora_telemetry.scrape import Metrics
from tests.conftest import (
    access_log_when,
    interruptible,
    metrics_when,
    post,
    recording_complete,
    unexpected_errors,
)
from tests.dashboards.prometheus import RULES, Prometheus
from tests.llm_d_picker import families, lora_state, parse_spec

pytestmark = pytest.mark.server
REQUESTS = 120
PICKER = Path(__file__).resolve().parents[2] / "dashboards" / "llm-d" / "endpoint-picker.yaml"
FLEET_RULES = re.findall(r"- record: (\S+)", RULES.read_text().split("name: lora-telemetry.fleet")[1])


def _started(process: subprocess.Popen, out: Path, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text()
        if "Ctrl-C stops the fleet" in text:
            return text
        if process.poll() is not None:
            break
        time.sleep(1)
    process.kill()
    raise AssertionError(f"the fleet did not start:\n{out.read_text()[-3000:]}")


def _send(gateway: str, names: list[str | None]) -> Counter:
    """Mixed-adapter requests through the gateway, over /generate and /v1/completions."""
    rng = random.Random(7)
    plan = [(rng.choice(names), rng.random() < 0.25, rng.randint(2, 12)) for _ in range(REQUESTS)]
    target = SimpleNamespace(url=gateway)

    def one(item: tuple[str | None, bool, int]) -> str:
        name, completions, tokens = item
        if completions:
            status, body = post(target, "/v1/completions", {"model": testbed.SERVED_MODEL_NAME, "lora_path": name,
                                                            "prompt": "through the gateway", "max_tokens": tokens})
        else:
            status, body = post(target, "/generate", {"text": "through the gateway", "lora_path": name,
                                                      "sampling_params": {"max_new_tokens": tokens}})
        assert status == 200, body
        return name or "__base__"

    with ThreadPoolExecutor(6) as pool:
        return Counter(pool.map(one, plan))


def _watch(url: str, texts: list[str], sending: threading.Event) -> None:
    """Raw /metrics texts of one replica while traffic runs, as the picker would scrape them."""
    while sending.is_set():
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            texts.append(response.read().decode())
        time.sleep(0.25)


def _settled(replicas: list[str], total: int, access_logs: list[Path]) -> list[Metrics]:
    """Each replica's /metrics once the fleet counted ``total`` finished requests and each replica's
    access log holds its finished requests and slot loads (appended every 0.2 s, later when busy)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scrapes = [Metrics.fetch(url) for url in replicas]
        if sum(m.total("sglang_lora_requests_total", outcome="finished") for m in scrapes) == total:
            break
        time.sleep(0.3)
    scrapes = [metrics_when(SimpleNamespace(url=url), lambda m: True) for url in replicas]  # schedulers' too
    for scrape, log in zip(scrapes, access_logs, strict=True):
        access_log_when(log, lambda records, m=scrape: recording_complete(records, m))
    return scrapes


@pytest.fixture(scope="module")
def fleet(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    out = tmp / "fleet.out"
    with open(out, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "lora_telemetry.cli", "testbed", "fleet", str(bed.root), "--replicas", "2",
             "--slots", "3"], stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
            preexec_fn=interruptible)
    try:
        text = _started(process, out)
        gateway = re.search(r"gateway: (http://\S+)", text).group(1)
        replicas = [m.group(1) for m in re.finditer(r"replica \d+: (http://\S+)/metrics", text)]
        assert len(replicas) == 2, text
        targets = [url.removeprefix("http://") for url in replicas]
        with Prometheus(targets, tmp) as prometheus:
            during, sending = [], threading.Event()
            watcher = threading.Thread(target=_watch, args=(replicas[0], during, sending))
            sending.set()
            watcher.start()
            sent = _send(gateway, [*bed.adapters(), None])
            sending.clear()
            watcher.join()
            access_logs = [bed.root / "fleet" / f"replica-{i}-access.log" for i in (0, 1)]
            scrapes = _settled(replicas, REQUESTS, access_logs)
            prometheus.wait_for('sum(sglang_lora_requests_total{outcome="finished"})',
                                lambda r: r and float(r[0]["value"][1]) == REQUESTS)
            prometheus.wait_for(FLEET_RULES[-1], bool, timeout=20)
            yield SimpleNamespace(prometheus=prometheus, sent=sent, scrapes=scrapes, targets=targets, during=during,
                                  adapters=set(bed.adapters()),
                                  access_logs=access_logs,
                                  logs=[bed.root / "fleet" / f"replica-{i}.log" for i in (0, 1)])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(90)


def test_prometheus_sums_each_adapters_requests_over_the_fleet_to_what_the_clients_sent(fleet):
    rows = fleet.prometheus.query('sum by (lora_name) (sglang_lora_requests_total{outcome="finished"})')
    counted = {r["metric"]["lora_name"]: float(r["value"][1]) for r in rows}
    assert {k: v for k, v in counted.items() if v} == dict(fleet.sent)
    assert len(fleet.sent) >= 8  # every adapter and the base model went through the gateway


def test_each_replica_keeps_its_own_series(fleet):
    rows = fleet.prometheus.query('sum by (instance) (sglang_lora_requests_total{outcome="finished"})')
    per_instance = {r["metric"]["instance"]: float(r["value"][1]) for r in rows}
    assert set(per_instance) == set(fleet.targets)
    for target, scrape in zip(fleet.targets, fleet.scrapes, strict=True):
        assert per_instance[target] == scrape.total("sglang_lora_requests_total", outcome="finished")
        assert per_instance[target] >= 0.3 * REQUESTS  # round-robin: both replicas served


def test_the_fleets_access_logs_replay_to_each_replicas_own_gpu_hits(fleet):
    advice = advise_fleet(fleet.access_logs, counts=[1, 2])
    for replica, scrape in zip(advice.replicas, fleet.scrapes, strict=True):
        lookups = scrape.by("sglang_lora_cache_lookups_total", "result", tier="gpu")
        base = scrape.by("sglang_lora_cache_lookups_total", "result", tier="gpu", lora_name="__base__")
        hits = lookups.get("hit", 0) - base.get("hit", 0)
        asked = hits + lookups.get("miss", 0) - base.get("miss", 0)
        assert replica.slots == 3 and replica.recorded() == (hits, asked)
    assert advice.requests == REQUESTS
    assert sum(scrape.total("sglang_lora_pool_evictions_total") for scrape in fleet.scrapes) > 0


def test_every_fleet_rule_gives_data_and_the_fleet_hit_ratio_divides_the_fleets_sums(fleet):
    for record in FLEET_RULES:
        assert fleet.prometheus.query(record), record
    [sample] = fleet.prometheus.query(":sglang_lora_cache_gpu_hit_ratio:rate5m")
    at, ratio = sample["value"][0], float(sample["value"][1])

    def total(record: str) -> float:  # the same evaluation of the group: the same timestamp
        return sum(float(r["value"][1]) for r in fleet.prometheus.query(record, at))

    hits, lookups = (total(f"lora_name:sglang_lora_cache_gpu_{part}:rate5m") for part in ("hits", "lookups"))
    divided = hits / lookups
    assert ratio == pytest.approx(divided, rel=1e-12)
    counted = Counter()
    for scrape in fleet.scrapes:
        for result, value in scrape.by("sglang_lora_cache_lookups_total", "result", tier="gpu").items():
            counted[result] += value
    # The counters the rule's rates come from hold exactly the replicas' own counts. (The rule itself is a ratio
    # of rates, which extrapolate each series by where its samples start in the window: a run's hit ratio
    # of 0.40 gave a rule of 0.46 once, so it is checked against its own parts above, not against the totals.)
    for result in ("hit", "miss"):
        rows = fleet.prometheus.wait_for(f'sum(sglang_lora_cache_lookups_total{{tier="gpu",result="{result}"}})',
                                         lambda r, n=counted[result]: r and float(r[0]["value"][1]) == n, timeout=20)
        assert float(rows[0]["value"][1]) == counted[result], result
    instances = fleet.prometheus.query("lora_name:sglang_lora_gpu_resident_instances:count")
    assert instances and all(1 <= float(r["value"][1]) <= 2 for r in instances)


def test_no_replica_logged_an_error_of_ours(fleet):
    for log in fleet.logs:
        assert not unexpected_errors(log.read_text(errors="replace")), log


def test_llm_d_picker_config_finds_every_series_and_reads_our_adapters(fleet):
    [extractor] = [p for p in yaml.safe_load(PICKER.read_text())["plugins"] if p["type"] == "core-metrics-extractor"]
    [sglang] = [e for e in extractor["parameters"]["engineConfigs"] if e["name"] == "sglang"]
    for key in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "loraSpec", "cacheBlockSizeSpec",
                "cacheNumBlocksSpec"):
        name, _ = parse_spec(sglang[key])
        for scrape in fleet.scrapes:
            assert name in families(scrape.text), (key, name)
    states = [lora_state(text, sglang["loraSpec"]) for text in fleet.during]
    assert states and all(s is not None and s.max_active == 3 for s in states)
    assert all(s.active | s.waiting <= fleet.adapters for s in states)
    assert any(s.active for s in states)  # adapters were seen running while the traffic ran
