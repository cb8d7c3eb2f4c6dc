"""A server started with a plan (LORA_TELEMETRY_PLAN): its adapters preloaded before it is ready,
one warning for the one it cannot find, the one it pins that ``--lora-paths`` loaded unpinned
loaded again pinned, and the pool's victims chosen by priority, exactly as
the simulator predicts from the server's own access log, where SGLang's LRU would differ; and a
request waiting with its own ``priority`` keeping its adapter in the pool."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from lora_telemetry.capacity.recording import Load, Pool
from lora_telemetry.capacity.simulator import PoolSimulator
from lora_telemetry.scrape import Metrics
from tests.conftest import (
    access_log_when,
    generate,
    lora_paths,
    metrics_when,
    post,
    recording_complete,
    running_server,
    unexpected_errors,
)

pytestmark = pytest.mark.server
SLOTS = 4
PLAN = {"version": 1, "slots": SLOTS, "preload": ["qa", "sql", "chat", "ghost"], "pin": ["sql"],
        "priorities": {"qa": 5}}
# One request at a time: one adapter per batch. After qa, sql (pinned) and chat fill the pool
# beside the base model, each new adapter needs a victim: LRU would take qa, the oldest.
SEQUENCE = ["qa", "sql", "chat", "code", "math", "chat", "code", "qa", "math", "chat", "qa", "code"]


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    (tmp / "plan.json").write_text(json.dumps(PLAN))
    env = {"LORA_TELEMETRY_PLAN": str(tmp / "plan.json"), "LORA_TELEMETRY_ADAPTER_DIR": str(bed.adapter_dir),
           "LORA_TELEMETRY_ACCESS_LOG": str(tmp / "access.log")}
    # One request runs at a time, so the others wait in SGLang's queue while a batch is formed.
    # sql, which the plan pins, is loaded unpinned first, as a server given --lora-paths too would.
    flags = ["--max-loras-per-batch", str(SLOTS), "--max-running-requests", "1",
             "--lora-paths", f"sql={bed.adapters()['sql']}"]
    with running_server(bed, flags, env=env, tmp=tmp) as server:
        server.access_log = tmp / "access.log"
        yield server


def test_the_plans_adapters_are_loaded_before_the_server_is_ready(server):
    m = metrics_when(server, lambda m: m.total("sglang_lora_adapter_loads_total") >= 4)
    assert m.by("sglang_lora_adapter_loads_total", "lora_name", trigger="preload", result="success") == \
        {"qa": 1, "sql": 1, "chat": 1}
    assert m.by("sglang_lora_adapter_loads_total", "lora_name", trigger="startup") == {"sql": 1}
    assert m.total("sglang_lora_adapter_loads_total") == 4  # nothing else, and no failed load counted
    assert m.by("sglang_lora_adapter_unloads_total", "lora_name") == {"sql": 1}  # to load it again, pinned
    records = access_log_when(server.access_log, lambda rs: any(isinstance(r, Load) and r.pinned for r in rs))
    loads = [(r.name, r.pinned) for r in records if isinstance(r, Load)]
    assert loads[:1] == [("sql", False)] and ("sql", True) in loads
    log = server.log_path.read_text()
    assert log.count("'ghost' is not in the adapter directory") == 1
    ready = log.index("The server is fired up and ready to roll")
    assert log.index("plan preloaded 2 adapters (0 pinned); pinned sql, loaded unpinned before") < ready


def test_the_pool_evicts_by_priority_exactly_as_the_simulator_replays_it(server):
    for name in SEQUENCE:
        generate(server, name)
    m = metrics_when(server, lambda m: m.total("sglang_lora_cache_lookups_total", tier="gpu") == len(SEQUENCE))
    counted = {k: v for k, v in m.by("sglang_lora_pool_evictions_total", "lora_name").items() if v}
    records = access_log_when(server.access_log, lambda rs: recording_complete(rs, m))
    [pool] = [r for r in records if isinstance(r, Pool)]
    assert (pool.policy, pool.priorities) == ("priority", PLAN["priorities"])  # advise replays what ran
    ranked = PoolSimulator(SLOTS, priorities=PLAN["priorities"]).replay(records)
    lru = PoolSimulator(SLOTS).replay(records)
    assert counted == {k: v for k, v in ranked.evictions.items() if v}
    hits = m.by("sglang_lora_cache_lookups_total", "lora_name", tier="gpu", result="hit")
    assert {k: v for k, v in hits.items() if v} == {k: v for k, v in ranked.hits.items() if v}
    assert "qa" not in counted and lru.evictions["qa"] >= 2  # SGLang's own policy would have lost qa
    assert "sql" not in counted  # pinned
    assert not unexpected_errors(server.log_path.read_text())


def _until(server, what: str, check) -> None:
    """Poll /metrics until ``check(metrics)`` holds (the scheduler publishes its queues every 0.25 s)."""
    deadline = time.monotonic() + 10
    while not check(Metrics.fetch(server.url)):
        assert time.monotonic() < deadline, f"not seen within 10 s: {what}"
        time.sleep(0.05)


def _admitted_while_others_wait(server, waiting_priority: int | None) -> tuple[dict, dict]:
    """The pool holds the base model, sql (pinned), qa (priority 5) and code. A long qa request
    runs while a legal request and then a code request (with ``waiting_priority``) queue behind
    it. When qa finishes, legal is admitted and needs a victim: qa or code; code still waits.
    Returns the evictions and code's gpu lookups from then on, from /metrics deltas."""
    generate(server, "code")
    before = metrics_when(server, lambda m: True)
    long_qa = threading.Thread(target=generate, args=(server, "qa"), kwargs={"tokens": 450})  # about 1.6 s
    long_qa.start()
    _until(server, "qa running", lambda m: m.total("sglang_lora_requests_running", lora_name="qa") == 1)
    code = {"text": "the adapter pool", "lora_path": "code", "sampling_params": {"max_new_tokens": 4}}
    if waiting_priority is not None:
        code["priority"] = waiting_priority
    queued = [threading.Thread(target=generate, args=(server, "legal")),
              threading.Thread(target=lambda: post(server, "/generate", code))]
    for name, thread in zip(("legal", "code"), queued, strict=True):  # in this order in SGLang's queue
        thread.start()
        _until(server, f"{name} waiting", lambda m, n=name: m.total("sglang_lora_requests_waiting", lora_name=n) == 1)
    assert long_qa.is_alive(), "the long request ended before the others queued: the scenario did not happen"
    for thread in [long_qa, *queued]:
        thread.join(timeout=120)
    lookups = before.total("sglang_lora_cache_lookups_total", tier="gpu") + 3
    after = metrics_when(server, lambda m: m.total("sglang_lora_cache_lookups_total", tier="gpu") == lookups)

    def delta(family: str, label: str, **match: str) -> dict:
        now, then = after.by(family, label, **match), before.by(family, label, **match)
        return {k: v - then.get(k, 0) for k, v in now.items() if v - then.get(k, 0)}

    return delta("sglang_lora_pool_evictions_total", "lora_name"), \
        delta("sglang_lora_cache_lookups_total", "result", tier="gpu", lora_name="code")


def test_a_request_waiting_with_a_priority_keeps_its_adapter_in_the_pool(server):
    # No priority on the waiting request: code (0) goes before qa (5), then misses and takes legal's slot.
    evicted, code = _admitted_while_others_wait(server, None)
    assert (evicted, code) == ({"code": 1, "legal": 1}, {"miss": 1})
    # Waiting at priority 9, code outranks qa while it waits: qa goes, and code hits.
    evicted, code = _admitted_while_others_wait(server, 9)
    assert (evicted, code) == ({"qa": 1}, {"hit": 1})
    assert not unexpected_errors(server.log_path.read_text())


# A long legal answer decodes while code's prefill needs a slot in a pool of three (the base model's among
# them), beside qa, which idles. By priority (legal 0, qa and code 5), or by SGLang's FIFO (legal came first),
# legal is the victim unless its running requests protect it.
DECODING = {
    "priority": ({"__base__": 1, "legal": 1, "qa": 1, "code": 1}, {}, {"qa": 1}),
    "fifo": ({"__base__": 1, "legal": 1, "qa": 1, "code": 1}, {"legal": 1}, {"legal": 1, "qa": 1}),
}


@pytest.fixture(scope="module", params=list(DECODING))
def decoding_server(request, bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"decoding-{request.param}")
    flags = ["--max-loras-per-batch", "3", *lora_paths(bed, ["legal", "qa", "code"])]
    env = {"LORA_TELEMETRY_ACCESS_LOG": str(tmp / "access.log")}
    if request.param == "priority":
        (tmp / "priorities.json").write_text(json.dumps({"qa": 5, "code": 5}))
        env["LORA_TELEMETRY_PRIORITIES"] = str(tmp / "priorities.json")
    else:
        flags += ["--lora-eviction-policy", "fifo"]
    with running_server(bed, flags, env=env, tmp=tmp) as server:
        server.policy, server.access_log = request.param, tmp / "access.log"
        yield server


def test_an_adapter_evicted_while_decoding_is_copied_back_and_counted_as_a_reload(decoding_server):
    """The reload pattern seen on an H100 under priorities: the decode step after code's prefill copies legal
    back (a reload). Our priority policy now takes idle qa instead, so legal is copied in once;
    SGLang's FIFO still reloads it, and the reload is counted as one."""
    server = decoding_server
    long_legal = threading.Thread(target=generate, args=(server, "legal"), kwargs={"tokens": 450})  # about 1.6 s
    long_legal.start()
    _until(server, "legal running", lambda m: m.total("sglang_lora_requests_running", lora_name="legal") == 1)
    generate(server, "qa")  # fills the last slot, then idles
    generate(server, "code")  # its prefill needs a victim among the base model, legal (decoding) and qa
    assert long_legal.is_alive(), "legal finished before code's prefill: the scenario did not happen"
    long_legal.join(timeout=120)
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total", outcome="finished") == 3)

    def counted(family: str, **match: str) -> dict:
        return {k: v for k, v in m.by(family, "lora_name", **match).items() if v}

    admitted, reloaded, evicted = DECODING[server.policy]
    assert counted("sglang_lora_pool_slot_loads_total") == dict(Counter(admitted) + Counter(reloaded))
    assert counted("sglang_lora_pool_slot_reloads_total") == reloaded
    assert counted("sglang_lora_pool_evictions_total") == evicted
    assert not unexpected_errors(server.log_path.read_text())
    # advise's simulator, replaying the access log under the recorded policy, knows it too
    records = access_log_when(server.access_log, lambda rs: recording_complete(rs, m))
    [pool] = {(r.slots, r.policy, tuple(r.priorities.items())) for r in records if isinstance(r, Pool)}
    replay = PoolSimulator(pool[0], pool[1], dict(pool[2]) or None).replay(records)
    assert (dict(replay.slot_loads), dict(replay.reloads), dict(replay.evictions)) == (
        dict(Counter(admitted) + Counter(reloaded)), reloaded, evicted)
