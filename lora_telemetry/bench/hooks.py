"""Micro-benchmarks of the hot paths: what a hook costs SGLang per call.

The hooks run here exactly as in SGLang, against stand-in objects that carry the few
attributes they read (a pool's slot map, a batch's requests), so the figure is our cost
alone: SGLang's own work is replaced by a no-op.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import random
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
    reqs = [SimpleNamespace(lora_id=uid, rid=f"r{i}", finished_reason=None) for i, uid in enumerate(ids)]
    sched = SimpleNamespace(enable_lora=True, tp_worker=worker, waiting_queue=[], max_loras_per_batch=adapters + 1,
                            enable_lora_overlap_loading=False, lora_drainer=None, disaggregation_mode=None,
                            running_batch=SimpleNamespace(reqs=reqs))
    mode = SimpleNamespace(is_extend=lambda: False, is_prebuilt=lambda: False, is_decode=lambda: True)
    return sched, SimpleNamespace(reqs=reqs, forward_mode=mode)


def _prefilled_batches(sched: SimpleNamespace, count: int, requests: int) -> list[SimpleNamespace]:
    """Prefill batches of requests not seen yet, each with SGLang's timestamps set."""
    extend = SimpleNamespace(is_extend=lambda: True, is_prebuilt=lambda: False, is_decode=lambda: False)
    stats = SimpleNamespace(wait_queue_entry_time=1.0, forward_entry_time=1.5, prefill_finished_time=1.75)
    uids = list(sched.tp_worker.model_runner.lora_manager.lora_refs)
    return [SimpleNamespace(forward_mode=extend, reqs=[
        SimpleNamespace(lora_id=uids[i % len(uids)], rid=f"r{n}-{i}", time_stats=stats) for i in range(requests)])
        for n in range(count)]


def _scheduler_pass(running: int = 1024, waiting: int = 5000, adapters: int = 64,
                    slots: int = 8) -> tuple[str, Timing, Timing]:
    """One pass of SGLang's scheduling loop at scale: the admission check of each waiting request until
    the full batch stops the pass at the first it could admit, the forward step, the pool's
    preparation, the step's result. Timed with our hooks and with SGLang's own calls alone (stand-ins
    that decide as SGLang does); the difference is ours. Each pass meets the queue at another point,
    so the number of admission checks varies as in a server. Also the pass that hands the batches
    and the routing state on, once per ``FLUSH_INTERVAL_S``."""
    rng = random.Random(0)
    resident = [f"id{i}" for i in range(slots - 1)]  # the running batch holds every slot but the base model's
    sched, batch = _decode_batch(adapters, running)
    for i, req in enumerate(batch.reqs):
        req.lora_id = resident[i % len(resident)]
    sched.running_batch = batch
    sched.waiting_queue = [SimpleNamespace(lora_id=f"id{rng.randrange(adapters)}", rid=f"w{i}")
                           for i in range(waiting)]
    queues = [sched.waiting_queue[start:start + 200] for start in range(0, waiting - 200, 5)]
    pool = sched.tp_worker.model_runner.lora_manager.memory_pool
    pool.uid_to_buffer_id = {uid: n for n, uid in enumerate([None, *resident])}
    running_loras = {None, *resident}

    def admit(self: Any, req: Any, loras: set) -> bool:
        return req.lora_id in loras

    def bare(queue: list) -> None:
        for req in queue:
            if admit(sched, req, running_loras):
                break
        _noop(pool, running_loras)

    def hooked(queue: list) -> None:
        for req in queue:
            if scheduler.can_schedule_lora_req(admit, sched, req, running_loras):
                break
        scheduler.run_batch(sched, batch)
        memory_pool.prepare_lora_batch(_noop, pool, running_loras)
        scheduler.process_batch_result(None, sched, batch)

    for queue in queues:  # every request refused once: counted now, as in a server's steady state
        hooked(queue)
    checks = sorted(next(i for i, req in enumerate(q) if req.lora_id in running_loras) + 1 for q in queues)
    ours, theirs = (_each_queue(run, queues) for run in (hooked, bare))
    flush = per_call(lambda: scheduler._flush(sched, batch, 0.0), calls=1, rounds=200)
    label = (f"a scheduler pass: {running:,} running, {waiting:,} waiting on {adapters} adapters "
             f"({checks[len(checks) // 2]} admission checks at the median)")
    return label, Timing(ours.median - theirs.median, ours.p95 - theirs.median, ours.runs), flush


def _each_queue(run: Callable[[list], None], queues: list[list]) -> Timing:
    """``run`` once per call, on the queues in turn."""
    turns = itertools.cycle(queues)
    return per_call(lambda: run(next(turns)), calls=1, rounds=5000)


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

    # in a context of its own, as the server runs each request in a task: the stamp stays there
    wrapped = contextvars.copy_context().run(per_call, through(http_server.stamping_arrival(app)))
    bare = per_call(through(app))
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
    label, scheduling, flush = _scheduler_pass()
    results[label] = scheduling
    results["  the same pass when it hands batches and routing state on (every 0.25 s)"] = flush
    return results
