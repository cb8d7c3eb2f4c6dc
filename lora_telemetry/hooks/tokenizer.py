"""Tokenizer side (main process): requests per adapter, host-tier lookups, loads, unloads.

These hooks run on SGLang's event loop, so they only read attributes and hand events on.
Async targets are wrapped with async AROUND hooks (an AFTER hook would only see the
coroutine object). A request is "admitted" once its adapter resolved; it ends either in
``_handle_batch_output`` with a finish reason, or through ``_release_lora_once`` on an
abort or a failure path, whichever comes first.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.http_server import http_arrival
from lora_telemetry.load_context import load_trigger

TOKENIZER = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
CONTROL = "sglang.srt.managers.tokenizer_control_mixin.TokenizerControlMixin"
HEALTH_CHECK_PREFIX = "HEALTH_CHECK"

# Names being loaded by a plan over this server's own HTTP API (:mod:`.preload`): no context to carry a trigger.
preloading: set[str] = set()
unload_reason: contextvars.ContextVar[str] = contextvars.ContextVar("lora_unload_reason", default="api")
_in_batch_output: contextvars.ContextVar[bool] = contextvars.ContextVar("lora_batch_output", default=False)
# rid -> (adapter name, host-tier hit, perf_counter time its adapter was in host memory, time the HTTP
# server received it or 0.0) of every admitted request that has not ended yet
admitted: dict[str, tuple[str, bool | None, float, float]] = {}
_warmup_running = [False]


@hook("server_warmup", "sglang.srt.entrypoints.http_server._wait_and_warmup", "AROUND",
      loses="telling SGLang's warm-up request from traffic (counted as __base__)")
def wait_and_warmup(original: Any, *args: Any, **kwargs: Any) -> Any:
    """The HTTP server's start-up thread, which sends SGLang's warm-up generation: not user traffic."""
    _warmup_running[0] = True
    try:
        return original(*args, **kwargs)
    finally:
        _warmup_running[0] = False


def _requests(obj: Any) -> list[tuple[str, str | None]]:
    """(rid, adapter name or None) for each request in a single or batch input."""
    rids = [obj.rid] if isinstance(obj.rid, str) else list(obj.rid or [])
    paths = obj.lora_path
    if not isinstance(paths, list):
        paths = [paths] * len(rids)
    return [(rid, paths[i % len(paths)] if paths else None) for i, rid in enumerate(rids)]


def _loaded_now(self: Any, names: set[str]) -> set[str]:
    """Which of ``names`` are loaded, without copying the registry (``get_all_adapters`` copies
    every adapter, per request, on the event loop)."""
    registry = self.lora_registry
    adapters = getattr(registry, "_registry", None)
    if adapters is None:
        adapters = registry.get_all_adapters()
    return {name for name in names if name in adapters}


def _warming_up(self: Any) -> bool:
    """SGLang's own warm-up request: sent by the HTTP server before it declares itself up."""
    return _warmup_running[0] and getattr(self.server_status, "value", None) == "Starting"


def _before_validate(self: Any, obj: Any) -> tuple[list[tuple[str, str | None]], set[str]]:
    if _warming_up(self):
        return [], set()
    requests = [(rid, name) for rid, name in _requests(obj) if not rid.startswith(HEALTH_CHECK_PREFIX)]
    names = {name for _, name in requests if name}
    return requests, (_loaded_now(self, names) if names else set())


def _rejected(before: tuple[list, set] | None, error: BaseException) -> None:
    for _, name in (before or ([], set()))[0]:
        runtime.emit(ev.RequestRejected(str(name), str(error)))


def _admitted(self: Any, before: tuple[list, set] | None) -> None:
    if before is None:
        return
    requests, loaded = before
    now, received = time.perf_counter(), http_arrival.get()
    for rid, name in requests:
        label = name or ev.BASE
        hit = None
        if name:
            hit = name in loaded
            runtime.emit(ev.CacheLookup(label, "host", hit, rid))
        admitted[rid] = (label, hit, now, received)
        runtime.emit(ev.RequestAdmitted(label))


@hook("tokenizer_validate", f"{TOKENIZER}._validate_and_resolve_lora", "AROUND",
      loses='requests_in_flight, cache_lookups_total{tier="host"}, every request series, rejected requests')
async def validate_and_resolve_lora(original: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    before = safely("tokenizer_validate", _before_validate, self, obj)
    token = load_trigger.set("reload")
    try:
        result = await original(self, obj, *args, **kwargs)
    except ValueError as error:
        safely("tokenizer_validate", _rejected, before, error)
        raise
    finally:
        load_trigger.reset(token)
    safely("tokenizer_validate", _admitted, self, before)
    return result


def _finished_states(self: Any, recv_obj: Any) -> list[tuple[int, Any]]:
    reasons = recv_obj.finished_reasons
    states = self.rid_to_state
    return [(i, states.get(recv_obj.rids[i])) for i, reason in enumerate(reasons) if reason is not None]


def _outcome(reason: Any) -> str:
    kind = reason.get("type") if isinstance(reason, dict) else getattr(reason, "type", None)
    return "aborted" if kind == "abort" else "finished"


def _times(state: Any, scheduler_stats: Any) -> tuple[float, float, float, float]:
    """created, first chunk, queued, prefilled: what a request's phases need from SGLang's timestamps.
    ``scheduler_stats``: its times in the scheduler, which SGLang returns with each output when it
    keeps metrics (``--enable-metrics``), already in this process's clock. A streamed request's
    first token left for the client when SGLang handed its first chunk on."""
    stats = state.time_stats
    first = stats.first_token_time
    if getattr(state.obj, "stream", False):
        first = stats.response_sent_to_client_time or first
    if scheduler_stats is None:
        return stats.created_time, first, 0.0, 0.0
    return stats.created_time, first, scheduler_stats.wait_queue_entry_time, scheduler_stats.prefill_finished_time


def _end(rid: str, state: Any, outcome: str, prompt_tokens: int, generation_tokens: int,
         scheduler_stats: Any = None) -> None:
    entry = admitted.pop(rid, None)
    if entry is None:
        return
    name, host_hit, resolved, received = entry
    stats = state.time_stats
    ttft = stats.get_first_token_latency() if stats.first_token_time else None
    e2e = stats.get_e2e_latency() if stats.finished_time else None
    traced = bool(getattr(getattr(stats, "trace_ctx", None), "tracing_enable", False))
    runtime.emit(ev.RequestFinished(name, outcome, prompt_tokens if outcome == "finished" else 0, generation_tokens,
                                    ttft, e2e, rid, host_hit, traced, resolved, *_times(state, scheduler_stats),
                                    received))


def _after_batch_output(recv_obj: Any, finished: list[tuple[int, Any]]) -> None:
    completion = getattr(recv_obj, "completion_tokens", None)
    scheduler_stats = getattr(recv_obj, "time_stats", None)
    for i, state in finished:
        if state is not None:
            _end(recv_obj.rids[i], state, _outcome(recv_obj.finished_reasons[i]),
                 recv_obj.prompt_tokens[i], completion[i] if completion else 0,
                 scheduler_stats[i] if scheduler_stats and i < len(scheduler_stats) else None)


@hook("tokenizer_batch_output", f"{TOKENIZER}._handle_batch_output", "AROUND",
      loses="requests_total, token counters, time_to_first_token and e2e latency")
async def handle_batch_output(original: Any, self: Any, recv_obj: Any, *args: Any, **kwargs: Any) -> Any:
    finished = safely("tokenizer_batch_output", _finished_states, self, recv_obj)
    token = _in_batch_output.set(True)
    try:
        return await original(self, recv_obj, *args, **kwargs)
    finally:
        _in_batch_output.reset(token)
        if finished:
            safely("tokenizer_batch_output", _after_batch_output, recv_obj, finished)


def _span_closing(attributes: Any, state: Any, recv_obj: Any, i: int) -> None:
    entry = admitted.get(recv_obj.rids[i])
    if entry is not None and isinstance(attributes, dict):
        scheduler_stats = recv_obj.time_stats[i] if getattr(recv_obj, "time_stats", None) else None
        runtime.emit(ev.RequestSpanClosing(entry[0], entry[1], attributes,
                                           ev.tokenizer_phases(entry[2], *_times(state, scheduler_stats), entry[3])))


@hook("tokenizer_span", f"{TOKENIZER}.convert_to_span_attrs", "AFTER",
      loses="our attributes on SGLang's own request spans (--enable-trace)")
def convert_to_span_attrs(attributes: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    """SGLang (``--enable-trace``) collects what it sets on its request span as it ends; ours join.
    Called as ``convert_to_span_attrs(state, recv_obj, i)``."""
    safely("tokenizer_span", _span_closing, attributes, *args)


def _released(state: Any) -> None:
    rid = state.obj.rid
    if isinstance(rid, str) and rid in admitted:
        _end(rid, state, "aborted", 0, len(state.output_ids or ()))


@hook("tokenizer_release", f"{TOKENIZER}._release_lora_once", "AFTER",
      loses='requests_total{outcome="aborted"} for requests ended outside the scheduler; they stay in flight')
def release_lora_once(result: Any, self: Any, state: Any, *args: Any, **kwargs: Any) -> None:
    if not _in_batch_output.get():
        safely("tokenizer_release", _released, state)


def _load_event(obj: Any, trigger: str, result: Any, seconds: float) -> None:
    success = bool(getattr(result, "success", False))
    runtime.emit(ev.AdapterLoaded(obj.lora_name, trigger, success, seconds,
                                  None if success else getattr(result, "error_message", None),
                                  pinned=bool(getattr(obj, "pinned", False))))


async def _timed_load(hook_name: str, trigger: str, original: Any, self: Any, obj: Any, *args: Any,
                      **kwargs: Any) -> Any:
    token = unload_reason.set("capacity")  # what the load unloads to stay within --max-loaded-loras
    start = time.perf_counter()
    try:
        result = await original(self, obj, *args, **kwargs)
    finally:
        unload_reason.reset(token)
    safely(hook_name, _load_event, obj, trigger, result, time.perf_counter() - start)
    return result


@hook("tokenizer_load", f"{CONTROL}.load_lora_adapter", "AROUND",
      loses="adapter_loads_total and adapter_load_seconds of api, reload and on_demand loads")
async def load_lora_adapter(original: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    trigger = "preload" if preloading and getattr(obj, "lora_name", None) in preloading else load_trigger.get()
    return await _timed_load("tokenizer_load", trigger, original, self, obj, *args, **kwargs)


@hook("tokenizer_load_tensors", f"{CONTROL}.load_lora_adapter_from_tensors", "AROUND",
      loses='adapter_loads_total{trigger="tensors"}')
async def load_lora_adapter_from_tensors(original: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    """Weights handed over in memory (``Engine.load_lora_adapter_from_tensors``, HTTP
    ``/load_lora_adapter_from_tensors``): RL trainers push a new version every step."""
    return await _timed_load("tokenizer_load_tensors", "tensors", original, self, obj, *args, **kwargs)


def _unload_event(obj: Any, reason: str, result: Any, seconds: float) -> None:
    if getattr(result, "success", False):
        runtime.emit(ev.AdapterUnloaded(obj.lora_name, reason, seconds))


@hook("tokenizer_unload", f"{CONTROL}._unload_lora_adapter_locked", "AROUND", loses="adapter_unloads_total")
async def unload_lora_adapter_locked(original: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    reason = unload_reason.get()
    start = time.perf_counter()
    result = await original(self, obj, *args, **kwargs)
    safely("tokenizer_unload", _unload_event, obj, reason, result, time.perf_counter() - start)
    return result
