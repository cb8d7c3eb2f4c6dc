"""Micro-benchmarks of the hot paths: what a hook costs SGLang per call.

The hooks run here exactly as in SGLang, against stand-in objects that carry the few
attributes they read (a pool's slot map, a batch's requests), so the figure is our cost
alone: SGLang's own work is replaced by a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.bench.timing import Timing, per_call
from lora_telemetry.hooks import http_server, memory_pool, scheduler, tokenizer
from lora_telemetry.hooks.ranks import set_reporting_rank


def _noop(*args: object, **kwargs: object) -> None:
    return None


def _decode_batch(adapters: int, requests: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    ids = [f"id{i % adapters}" for i in range(requests)]
    refs = {f"id{i}": SimpleNamespace(lora_name=f"lora{i}", pinned=False) for i in range(adapters)}
    pool = SimpleNamespace(uid_to_buffer_id={uid: n for n, uid in enumerate(refs)}, max_loras_per_batch=adapters + 1)
    manager = SimpleNamespace(lora_refs=refs, memory_pool=pool)
    worker = SimpleNamespace(model_runner=SimpleNamespace(lora_manager=manager))
    reqs = [SimpleNamespace(lora_id=uid, rid=f"r{i}") for i, uid in enumerate(ids)]
    sched = SimpleNamespace(enable_lora=True, tp_worker=worker, waiting_queue=[], max_loras_per_batch=adapters + 1,
                            enable_lora_overlap_loading=False, lora_drainer=None, disaggregation_mode=None,
                            running_batch=SimpleNamespace(reqs=reqs))
    mode = SimpleNamespace(is_extend=lambda: False, is_prebuilt=lambda: False)
    return sched, SimpleNamespace(reqs=reqs, forward_mode=mode)


def _prefilled_batches(sched: SimpleNamespace, count: int, requests: int) -> list[SimpleNamespace]:
    """Prefill batches of requests not seen yet, each with SGLang's timestamps set."""
    extend = SimpleNamespace(is_extend=lambda: True, is_prebuilt=lambda: False)
    stats = SimpleNamespace(wait_queue_entry_time=1.0, forward_entry_time=1.5, prefill_finished_time=1.75)
    uids = list(sched.tp_worker.model_runner.lora_manager.lora_refs)
    return [SimpleNamespace(forward_mode=extend, reqs=[
        SimpleNamespace(lora_id=uids[i % len(uids)], rid=f"r{n}-{i}", time_stats=stats) for i in range(requests)])
        for n in range(count)]


def _per_request(timing: Timing, requests: int) -> Timing:
    return Timing(timing.median / requests, timing.p95 / requests, timing.runs)


def _phases(sched: SimpleNamespace, telemetry: runtime.Telemetry, requests: int = 16) -> tuple[Timing, Timing]:
    """The hook's cost per request on the scheduler's loop (with the publisher thread running the
    deferred work beside it, as in a scheduler), and that work's cost per request on its thread."""
    calls, rounds = 200, 25
    telemetry.start_publisher()
    batches = iter(_prefilled_batches(sched, calls * rounds, requests))
    hook = per_call(lambda: scheduler.process_batch_result(None, sched, next(batches)), calls, rounds)
    telemetry.render_deferred()
    refs = sched.tp_worker.model_runner.lora_manager.lora_refs
    names = {uid: memory_pool.lora_name(uid, refs) for uid in refs}
    deferred = iter(_prefilled_batches(sched, calls * rounds, requests))
    work = per_call(lambda: scheduler._phases_of(next(deferred).reqs, names, {}), calls, rounds)
    return _per_request(hook, requests), _per_request(work, requests)


def _http_wrapper() -> Timing:
    """One request through the wrapper, less the same request straight to the app it wraps (an
    app that answers at once, driven without an event loop)."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        return None

    def through(asgi: Callable) -> Callable[[], None]:
        scope = {"type": "http"}

        def call() -> None:
            try:
                asgi(scope, None, None).send(None)
            except StopIteration:
                pass

        return call

    wrapped, bare = per_call(through(http_server.stamping_arrival(app))), per_call(through(app))
    return Timing(wrapped.median - bare.median, wrapped.p95 - bare.median, wrapped.runs)


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
    waiting = batch.reqs[0]
    scheduler.can_schedule_lora_req(lambda *a: False, sched, waiting, set())  # its first refusal, counted
    results["admission hook, a waiting request refused again (per request, per pass)"] = per_call(
        lambda: scheduler.can_schedule_lora_req(lambda *a: False, sched, waiting, set()))
    results["admission hook, a request admitted"] = per_call(
        lambda: scheduler.can_schedule_lora_req(lambda *a: True, sched, batch.reqs[1], set()))
    results["result hook, a decode batch (per forward batch)"] = per_call(
        lambda: scheduler.process_batch_result(None, sched, batch))
    state = SimpleNamespace(obj=SimpleNamespace(stream=True), time_stats=SimpleNamespace(
        created_time=1.0, first_token_time=1.2, response_sent_to_client_time=1.25))
    scheduler_stats = SimpleNamespace(wait_queue_entry_time=1.05, prefill_finished_time=1.15)
    finished = ev.RequestFinished("lora1", "finished", 8, 8, 0.2, 0.5, "r1", True)
    late = (telemetry.prometheus._finished_phases,)

    def tokenizer_phases() -> None:  # what a request adds: its HTTP arrival, its times read, rendering deferred
        tokenizer.http_arrival.get()
        tokenizer._times(state, scheduler_stats)
        telemetry._defer((late, finished))

    results["tokenizer: a request's phase times read at its end, rendering deferred (per request)"] = per_call(
        tokenizer_phases)
    results["HTTP app wrapper stamping a request's arrival (per request)"] = _http_wrapper()
    hook, render = _phases(sched, telemetry)
    results["result hook, a prefill batch of 16 requests (per request)"] = hook
    results["  their phases, read and rendered on the publisher thread (per request)"] = render
    return results
