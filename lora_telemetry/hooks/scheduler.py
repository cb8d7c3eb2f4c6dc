"""Scheduler (scheduler process): gpu-tier lookups, adapters per batch, admission, routing.

``run_batch`` runs once per forward step, so its hook keeps to local state: it counts the
batch's distinct adapters into a tally, looks at each request of a prefill batch once
(marking it seen), and hands the tally and the routing gauges on at most every
``FLUSH_INTERVAL_S`` while busy, and once when the scheduler idles.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.memory_pool import lora_name
from lora_telemetry.hooks.ranks import reporting_rank
from lora_telemetry.hooks.tokenizer import HEALTH_CHECK_PREFIX

SCHEDULER = "sglang.srt.managers.scheduler.Scheduler"
FLUSH_INTERVAL_S = 0.25
_SEEN = "_lora_telemetry_seen"
_batches: dict[int, int] = {}  # distinct adapters per batch -> batches, since the last flush
_state = {"last_flush": 0.0, "busy": False}


def _manager(scheduler: Any) -> Any:
    return scheduler.tp_worker.model_runner.lora_manager


def _routing_state(scheduler: Any, batch: Any, refs: dict) -> ev.RoutingState:
    running = Counter(lora_name(r.lora_id, refs) for r in (batch.reqs if batch is not None else ()))
    waiting = Counter(lora_name(r.lora_id, refs) for r in scheduler.waiting_queue)
    for counts in (running, waiting):
        counts.pop(ev.BASE, None)
    return ev.RoutingState(dict(running), dict(waiting), scheduler.max_loras_per_batch, time.time())


def _flush(scheduler: Any, batch: Any, now: float) -> None:
    _state["last_flush"] = now
    _state["busy"] = batch is not None
    if _batches:
        runtime.emit(ev.BatchComposition(dict(_batches)))
        _batches.clear()
    runtime.emit(_routing_state(scheduler, batch, _manager(scheduler).lora_refs))


def _gpu_lookups(scheduler: Any, reqs: list) -> None:
    manager = _manager(scheduler)
    refs, slots = manager.lora_refs, manager.memory_pool.uid_to_buffer_id
    for req in reqs:
        if getattr(req, _SEEN, False) or req.rid.startswith(HEALTH_CHECK_PREFIX):
            continue
        setattr(req, _SEEN, True)
        name, hit, span = lora_name(req.lora_id, refs), req.lora_id in slots, _traced_span(req)
        runtime.emit(ev.CacheLookup(name, "gpu", hit, req.rid, span is not None))
        if span is not None:
            runtime.emit(ev.HostSpanLookup(span, name, "gpu", hit))


def _traced_span(req: Any) -> Any:
    """SGLang's open span of this request in this scheduler, when it traces (``--enable-trace``)."""
    context = getattr(getattr(req, "time_stats", None), "trace_ctx", None)
    if not getattr(context, "tracing_enable", False):
        return None
    return getattr(context.thread_context, "thread_span", None)


def _on_batch(self: Any, batch: Any) -> None:
    if not self.enable_lora:
        return
    distinct = len({r.lora_id for r in batch.reqs})
    _batches[distinct] = _batches.get(distinct, 0) + 1
    if batch.forward_mode.is_extend():
        _gpu_lookups(self, batch.reqs)
    now = time.monotonic()
    if now - _state["last_flush"] >= FLUSH_INTERVAL_S:
        _flush(self, batch, now)


@hook("scheduler_run_batch", f"{SCHEDULER}.run_batch", "BEFORE")
def run_batch(self: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    if reporting_rank():
        safely("scheduler_run_batch", _on_batch, self, batch)


def _on_idle(self: Any) -> None:
    if self.enable_lora:
        _flush(self, None, time.monotonic())


@hook("scheduler_idle", f"{SCHEDULER}.on_idle", "AFTER")
def on_idle(result: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    if _state["busy"] and reporting_rank():
        safely("scheduler_idle", _on_idle, self)


def _deferred(self: Any, req: Any) -> None:
    runtime.emit(ev.AdmissionDeferred(lora_name(req.lora_id, _manager(self).lora_refs)))


@hook("scheduler_admission", f"{SCHEDULER}.can_schedule_lora_req", "AFTER")
def can_schedule_lora_req(ok: bool, self: Any, req: Any, *args: Any, **kwargs: Any) -> None:
    if not ok and reporting_rank():
        safely("scheduler_admission", _deferred, self, req)
