"""Micro-benchmarks of the hot paths: what a hook costs SGLang per call.

The hooks run here exactly as in SGLang, against stand-in objects that carry the few
attributes they read (a pool's slot map, a batch's requests), so the figure is our cost
alone: SGLang's own work is replaced by a no-op.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.bench.timing import Timing, per_call
from lora_telemetry.hooks import memory_pool, scheduler
from lora_telemetry.hooks.ranks import set_reporting_rank


def _noop(*args: object, **kwargs: object) -> None:
    return None


def _decode_batch(adapters: int, requests: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    ids = [f"id{i % adapters}" for i in range(requests)]
    refs = {f"id{i}": SimpleNamespace(lora_name=f"lora{i}", pinned=False) for i in range(adapters)}
    pool = SimpleNamespace(uid_to_buffer_id={uid: n for n, uid in enumerate(refs)}, max_loras_per_batch=adapters + 1)
    manager = SimpleNamespace(lora_refs=refs, memory_pool=pool)
    worker = SimpleNamespace(model_runner=SimpleNamespace(lora_manager=manager))
    sched = SimpleNamespace(enable_lora=True, tp_worker=worker, waiting_queue=[], max_loras_per_batch=adapters + 1)
    reqs = [SimpleNamespace(lora_id=uid, rid=f"r{i}") for i, uid in enumerate(ids)]
    batch = SimpleNamespace(reqs=reqs, forward_mode=SimpleNamespace(is_extend=lambda: False))
    return sched, batch


def run() -> dict[str, Timing]:
    os.environ.setdefault("LORA_TELEMETRY_LOG_FILE", os.devnull)  # measure the log write, not a terminal
    runtime.reset()
    telemetry = runtime.get()
    set_reporting_rank(True)  # as in a TP-rank-0 scheduler
    results: dict[str, Timing] = {}
    lookup = ev.CacheLookup("lora7", "gpu", True)
    results["record one event (a cache lookup, to every sink)"] = per_call(lambda: telemetry.emit(lookup))
    results["build and record one event"] = per_call(lambda: telemetry.emit(ev.CacheLookup("lora7", "gpu", True)))
    eviction = ev.SlotEvicted("lora7", 3)
    results["record a logged event (an eviction: metrics + JSON line)"] = per_call(
        lambda: telemetry.emit(eviction), calls=200)
    pool = SimpleNamespace(uid_to_buffer_id={None: 0, "a": 1, "b": 2, "c": 3})
    uids = {None, "a", "c"}
    results["pool hook, every adapter resident (per forward batch)"] = per_call(
        lambda: memory_pool.prepare_lora_batch(_noop, pool, uids))
    sched, batch = _decode_batch(adapters=4, requests=16)
    results["scheduler hook, decode batch of 16 requests"] = per_call(lambda: scheduler.run_batch(sched, batch))
    return results
