"""Scheduler (scheduler process): gpu-tier lookups, adapters per batch, admission, routing.

``run_batch`` runs once per forward step, over a running batch of up to thousands of requests,
so its hook never walks a decode batch: it keeps a reference to the batch's request list
(SGLang replaces that list when the batch changes and never edits it in place, so the
reference is a snapshot), looks at each request of a prefill batch once (marking it seen), and
at most every ``FLUSH_INTERVAL_S`` while busy, and once when the scheduler idles, hands the
batches and the routing state on to be counted off the scheduler's thread.

Where the gpu-tier lookup happens depends on how SGLang fills slots. By default slots are
filled at forward time, so a request's lookup is made when it is first scheduled. With
``--enable-lora-overlap-loading`` slots are filled at admission and a request is admitted
only once its adapter holds one, so its lookup is made at its first admission check.

``can_schedule_lora_req`` is asked for every waiting request on every scheduling pass. A
request it refuses is counted once (marked on the request), with the reason: ``slot`` when
its adapter cannot get a pool slot, ``drain`` when SGLang's LoRA drainer holds it back by
policy; one refused for a slot and later held back by the drainer is counted under ``drain``
too. When the request is scheduled, how long it waited since its first refusal is observed.

A scheduled request can go back to the waiting queue (``_add_request_to_queue``): retracted when
the KV cache runs out under the running batch, preempted by a request of higher priority. That is
counted; its lookup, deferral, wait and phases stay those of its first scheduling, whose queue
entry time is kept on the request (SGLang overwrites its own at the re-queue, possibly before the
phases are read).

When a request's prefill is done (``process_batch_result``), where its time in this scheduler
went is handed on as phases, from the timestamps SGLang keeps on every request
(``time_stats``: queued, first scheduled, prefill finished) and the two we add (first
refusal, and the slot load its batch made for it); read off the scheduler's thread.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.memory_pool import batch_cause, last_slot_load_s, lora_name
from lora_telemetry.hooks.ranks import reporting_rank
from lora_telemetry.hooks.tokenizer import HEALTH_CHECK_PREFIX

SCHEDULER = "sglang.srt.managers.scheduler.Scheduler"
FLUSH_INTERVAL_S = 0.25
_SEEN = "_lora_telemetry_seen"  # its gpu-tier lookup was made
_MISSED = "_lora_telemetry_missed"  # its gpu-tier lookup missed: its batch loaded its adapter
_DEFERRED = "_lora_telemetry_deferred"  # perf_counter time of its first refusal; 0.0 once scheduled
_REFUSED_AT = "_lora_telemetry_refused_at"  # perf_counter time of its first refusal, kept for its phases
_PHASED = "_lora_telemetry_phased"  # its phases were handed on
_HELD_BY_DRAIN = "_lora_telemetry_held_by_drain"  # counted as deferred by the drainer
_QUEUED = "_lora_telemetry_queued"  # its wait_queue_entry_time when first scheduled (a re-queue overwrites it)
_batch_reqs: list[list] = []  # the request list of each forward batch since the last flush
_state = {"last_flush": 0.0, "busy": False}


def _manager(scheduler: Any) -> Any:
    return scheduler.tp_worker.model_runner.lora_manager


def _composition(batches: list[list]) -> None:
    """Batches by their number of distinct adapters; a decode batch that did not change since the
    step before is the same list, counted without walking it again."""
    tally: dict[int, int] = {}
    last, distinct = None, 0
    for reqs in batches:
        if reqs is not last:
            last, distinct = reqs, len({r.lora_id for r in reqs})
        tally[distinct] = tally.get(distinct, 0) + 1
    runtime.emit(ev.BatchComposition(tally))


def _routing_state(running: list, batch_reqs: list, waiting: list, refs: dict, slots: int, at: float) -> None:
    """Requests in the running batch (and the new prefill batch, which joins it) and in the queue.

    ``running`` and ``batch_reqs`` hold the requests that were not finished at the flush.
    """
    reqs = {id(r): r for r in running}
    reqs.update((id(r), r) for r in batch_reqs)
    by_uid = (Counter(r.lora_id for r in reqs.values()), Counter(r.lora_id for r in waiting))
    by_name: tuple[Counter, Counter] = (Counter(), Counter())
    for counts, named in zip(by_uid, by_name, strict=True):
        for uid, count in counts.items():
            if uid is not None:
                named[lora_name(uid, refs)] += count
    runtime.emit(ev.RoutingState(dict(by_name[0]), dict(by_name[1]), slots, at))


def _running_lists(scheduler: Any) -> list:
    """The request lists of the running batch; with pipeline parallelism, of every micro-batch's
    (SGLang swaps ``running_batch`` per micro-batch and keeps them all in ``running_mbs``)."""
    micro_batches = getattr(scheduler, "running_mbs", None) or (getattr(scheduler, "running_batch", None),)
    return [reqs for b in micro_batches if (reqs := getattr(b, "reqs", None))]


def _flush(scheduler: Any, batch: Any, now: float) -> None:
    """Hands the work on, with what it reads taken now: SGLang's request lists (replaced, never edited),
    a copy of the waiting queue (edited in place) and of the adapter names (an adapter may be unloaded)."""
    _state["last_flush"] = now
    _state["busy"] = batch is not None
    if _batch_reqs:
        runtime.defer(functools.partial(safely, "scheduler_run_batch", _composition, _batch_reqs[:]))
        _batch_reqs.clear()
    # Finished requests stay in the running batch until its next filter (with the overlap scheduler, a
    # step later); SGLang's admission no longer counts them as holding a slot, and neither do we. That
    # is read now: by the time the publisher counts, a short request has finished. ``finished()`` is
    # ``finished_reason is not None`` (0.5.21, 0.5.23); the field read is a third of the call's cost.
    lists = _running_lists(scheduler)
    running = [r for reqs in lists for r in reqs if r.finished_reason is None]
    joining = [r for r in batch.reqs if r.finished_reason is None] \
        if batch is not None and all(batch.reqs is not reqs for reqs in lists) else []
    runtime.defer(functools.partial(
        safely, "scheduler_run_batch", _routing_state, running, joining,
        list(scheduler.waiting_queue), dict(_manager(scheduler).lora_refs), scheduler.max_loras_per_batch,
        time.time()))


def _lookup(req: Any, refs: dict, hit: bool, at_admission: bool = False) -> None:
    setattr(req, _SEEN, True)
    if not hit:
        setattr(req, _MISSED, True)
    name, span = lora_name(req.lora_id, refs), _traced_span(req)
    runtime.emit(ev.CacheLookup(name, "gpu", hit, req.rid, span is not None, at_admission))
    if span is not None:
        runtime.emit(ev.HostSpanLookup(span, name, "gpu", hit))


def _first_scheduled(scheduler: Any, reqs: list) -> None:
    """Requests of a prefill batch: their gpu lookup (unless made at admission), their wait."""
    manager = _manager(scheduler)
    refs, slots = manager.lora_refs, manager.memory_pool.uid_to_buffer_id
    for req in reqs:
        if getattr(req, _QUEUED, None) is not None:
            continue  # scheduled again after a retraction or a preemption: counted the first time
        setattr(req, _QUEUED, getattr(req.time_stats, "wait_queue_entry_time", 0.0))
        since = getattr(req, _DEFERRED, None)
        setattr(req, _DEFERRED, 0.0)  # a refusal after a re-queue is not a deferral of its own
        if since:
            setattr(req, _REFUSED_AT, since)
            runtime.emit(ev.AdmissionWaited(lora_name(req.lora_id, refs), time.perf_counter() - since))
        if not getattr(req, _SEEN, False) and not req.rid.startswith(HEALTH_CHECK_PREFIX):
            _lookup(req, refs, req.lora_id in slots)


def _record_decoding(scheduler: Any) -> None:
    """For the access log (only then: it walks the running batch once per prefill batch): the
    adapters a priority pool keeps while this prefill batch takes slots."""
    refs = _manager(scheduler).lora_refs
    uids = {r.lora_id for reqs in _running_lists(scheduler) for r in reqs if r.finished_reason is None}
    runtime.emit(ev.DecodingAdapters(tuple(sorted(lora_name(uid, refs) for uid in uids if uid is not None))))


def _traced_span(req: Any) -> Any:
    """SGLang's open span of this request in this scheduler, when it traces (``--enable-trace``)."""
    context = getattr(getattr(req, "time_stats", None), "trace_ctx", None)
    if not getattr(context, "tracing_enable", False):
        return None
    return getattr(context.thread_context, "thread_span", None)


def _on_batch(self: Any, batch: Any) -> None:
    if not self.enable_lora or not batch.reqs:
        return  # idle batches (DP attention) and batches without requests ran no adapter
    mode = batch.forward_mode
    batch_cause[0] = "reload" if mode.is_decode() else "admission"
    if mode.is_prebuilt():  # PD decode: requests arrive prefilled; their adapter runs from the next step
        _first_scheduled(self, batch.reqs)
        return
    _batch_reqs.append(batch.reqs)
    if mode.is_extend():
        _first_scheduled(self, batch.reqs)
        if runtime.get().config.access_log is not None:
            _record_decoding(self)
    now = time.monotonic()
    if now - _state["last_flush"] >= FLUSH_INTERVAL_S:
        _flush(self, batch, now)


@hook("scheduler_run_batch", f"{SCHEDULER}.run_batch", "BEFORE",
      loses='cache_lookups_total{tier="gpu"}, batch_adapters, admission_wait_seconds, the routing gauges')
def run_batch(self: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    if reporting_rank():
        safely("scheduler_run_batch", _on_batch, self, batch)


def _on_idle(self: Any) -> None:
    if self.enable_lora:
        _flush(self, None, time.monotonic())


@hook("scheduler_idle", f"{SCHEDULER}.on_idle", "AFTER",
      loses="routing gauges returning to 0 when the scheduler idles")
def on_idle(result: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    if _state["busy"] and reporting_rank():
        safely("scheduler_idle", _on_idle, self)


def _admission_lookup(scheduler: Any, req: Any, running_loras: Any) -> None:
    """Overlap loading: the request's first admission check is its gpu lookup. It hits when the
    adapter holds a slot, its copy done or still in flight (the request starts no copy; a wait
    for the copy shows as admission time), as the pool's replay counts it."""
    if req.rid.startswith(HEALTH_CHECK_PREFIX):
        return
    manager = _manager(scheduler)
    uid = req.lora_id
    _lookup(req, manager.lora_refs, uid in running_loras or uid in manager.memory_pool.uid_to_buffer_id, True)


def _refused(scheduler: Any, req: Any) -> None:
    setattr(req, _DEFERRED, time.perf_counter())
    drainer = scheduler.lora_drainer
    reason = "drain" if drainer is not None and not drainer.can_schedule(req) else "slot"
    if reason == "drain":
        setattr(req, _HELD_BY_DRAIN, True)
    runtime.emit(ev.AdmissionDeferred(lora_name(req.lora_id, _manager(scheduler).lora_refs), reason))


def _maybe_held_by_drain(scheduler: Any, req: Any) -> None:
    """A request refused for a slot that the drainer now holds back too is counted under drain as
    well: the two reasons call for different remedies (more slots; a shorter drain threshold)."""
    if not scheduler.lora_drainer.can_schedule(req):
        setattr(req, _HELD_BY_DRAIN, True)
        runtime.emit(ev.AdmissionDeferred(lora_name(req.lora_id, _manager(scheduler).lora_refs), "drain"))


@hook("scheduler_admission", f"{SCHEDULER}.can_schedule_lora_req", "AROUND",
      loses="admission_deferrals_total; gpu lookups with --enable-lora-overlap-loading")
def can_schedule_lora_req(original: Any, self: Any, req: Any, running_loras: Any, *args: Any, **kwargs: Any) -> bool:
    """Called for every waiting request on every scheduling pass: a request already looked up
    and already refused costs two attribute reads."""
    reports = reporting_rank()
    if reports and getattr(self, "enable_lora_overlap_loading", False) and not getattr(req, _SEEN, False):
        safely("scheduler_admission", _admission_lookup, self, req, running_loras)
    ok = original(self, req, running_loras, *args, **kwargs)
    if not ok and reports:
        refused_at = getattr(req, _DEFERRED, None)
        if refused_at is None:
            safely("scheduler_admission", _refused, self, req)
        elif refused_at and self.lora_drainer is not None and not getattr(req, _HELD_BY_DRAIN, False):
            safely("scheduler_admission", _maybe_held_by_drain, self, req)
    return ok


def _requeued(scheduler: Any, req: Any, retracted: bool) -> None:
    runtime.emit(ev.RequestRequeued(lora_name(req.lora_id, _manager(scheduler).lora_refs),
                                    "retract" if retracted else "preempt"))


@hook("scheduler_requeue", f"{SCHEDULER}._add_request_to_queue", "BEFORE",
      loses="requests_requeued_total (retractions and preemptions)")
def add_request_to_queue(self: Any, req: Any, is_retracted: bool = False, *args: Any, **kwargs: Any) -> None:
    """Every request enters the waiting queue here, once on arrival; one we saw scheduled is being
    sent back (SGLang re-queues a preempted request without ``is_retracted``)."""
    if getattr(req, _QUEUED, None) is not None and self.enable_lora and reporting_rank():
        safely("scheduler_requeue", _requeued, self, req, is_retracted)


def _phases_of(reqs: tuple, names: dict, slot_loads: dict) -> None:
    """Each request of a prefill batch whose prefill is done, with SGLang's timestamps and ours.
    Runs on the publisher thread (see :func:`_prefilled`); SGLang has set these timestamps for good."""
    for req in reqs:
        stats = req.time_stats
        if getattr(req, _PHASED, False) or not stats.prefill_finished_time:
            continue  # reported already, or a chunk of a longer prompt
        setattr(req, _PHASED, True)
        if req.rid.startswith(HEALTH_CHECK_PREFIX):
            continue
        missed, uid = getattr(req, _MISSED, False), req.lora_id
        queued = getattr(req, _QUEUED, None) or stats.wait_queue_entry_time  # SGLang's is overwritten by a re-queue
        runtime.emit(ev.RequestPhases(
            names[uid], req.rid, (not missed) if getattr(req, _SEEN, False) else None, queued,
            getattr(req, _REFUSED_AT, 0.0), stats.forward_entry_time, stats.prefill_finished_time,
            slot_loads.get(uid, 0.0) if missed else 0.0, _traced_span(req)))


def _prefilled(scheduler: Any, batch: Any) -> None:
    """A prefill batch's results are in: its requests' phases are read and rendered later, on the
    publisher thread, so the scheduler's loop pays per batch, not per request. The batch's adapter
    names and slot-load times are taken now (an adapter may be unloaded, a slot reloaded, before
    then). When the host traces requests itself (``--enable-trace``) it is done now: its spans of
    the requests must get the phases while they are open."""
    if not (scheduler.enable_lora and batch.forward_mode.is_extend()
            and getattr(scheduler.disaggregation_mode, "value", "null") == "null"):
        return
    reqs = tuple(batch.reqs)
    if not reqs:
        return
    refs = _manager(scheduler).lora_refs
    names = {uid: lora_name(uid, refs) for uid in {req.lora_id for req in reqs}}
    if _traced_span(reqs[0]) is None:
        runtime.defer(functools.partial(safely, "scheduler_prefilled", _phases_of, reqs, names,
                                        dict(last_slot_load_s)))
    else:
        _phases_of(reqs, names, last_slot_load_s)


@hook("scheduler_prefilled", f"{SCHEDULER}.process_batch_result", "AFTER",
      loses="ttft_phase_seconds of the scheduler's phases (queue, admission, slot_load, prefill)")
def process_batch_result(result: Any, self: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    """Runs once per forward batch; only prefill batches of a server that is not a PD prefill
    server (whose requests finish elsewhere) are looked at."""
    if reporting_rank():
        safely("scheduler_prefilled", _prefilled, self, batch)
