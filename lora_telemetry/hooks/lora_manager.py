"""LoRA manager (scheduler process): adapters entering and leaving host memory.

Every rank reports the bytes it holds (each TP and PP rank keeps a full host copy); only
the reporting rank counts (:mod:`.ranks`). ``_load_lora_adapter`` also runs for the
``--lora-paths`` adapters during start-up, before the pool exists; those loads are counted
here with ``trigger="startup"``. Loads asked for later are counted end to end on the
tokenizer side (:mod:`.tokenizer`), over all ranks.

With DP attention a batch's pool holds the union of every DP rank's adapters; when that union
does not fit the pool SGLang raises (``prepare_lora_batch``) and the scheduler dies. Before the
error goes on it is reported: one event, logged and counted, naming how many adapters met.
"""

from __future__ import annotations

import time
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.memory_pool import INTERNAL_ADAPTERS, last_slot_load_s, pool_state
from lora_telemetry.hooks.ranks import counts_the_pool, reporting_rank
from lora_telemetry.hooks.sizes import adapter_bytes, slot_bytes

MANAGER = "sglang.srt.lora.lora_manager.LoRAManager"
_starting_up: set[int] = set()


@hook("manager_startup", f"{MANAGER}.init_lora_adapters", "AROUND",
      loses='adapter_loads_total{trigger="startup"} (start-up loads count as later loads)')
def init_lora_adapters(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    _starting_up.add(id(self))
    try:
        return original(self, *args, **kwargs)
    finally:
        _starting_up.discard(id(self))


def _loaded(self: Any, lora_ref: Any, result: Any, seconds: float) -> None:
    name = lora_ref.lora_name
    if name in INTERNAL_ADAPTERS:
        return
    reports = reporting_rank()
    pinned = bool(lora_ref.pinned)
    size = adapter_bytes(self.loras[lora_ref.lora_id]) if result.success else 0
    if reports and id(self) in _starting_up:
        config = self.configs.get(lora_ref.lora_id) if result.success else None
        runtime.emit(ev.AdapterLoaded(name, "startup", bool(result.success), seconds,
                                      None if result.success else result.error_message,
                                      rank=getattr(config, "r", None), pinned=pinned, bytes=size))
    if result.success:
        runtime.emit(ev.Residency(name, "host", True, size, pinned, memory_only=not reports))
    runtime.get().flush()


@hook("manager_load", f"{MANAGER}._load_lora_adapter", "AROUND",
      loses="adapters_loaded, adapter_resident and adapter_memory_bytes of the host tier")
def load_lora_adapter(original: Any, self: Any, lora_ref: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    result = original(self, lora_ref, *args, **kwargs)
    safely("manager_load", _loaded, self, lora_ref, result, time.perf_counter() - start)
    return result


@hook("manager_load_tensors", f"{MANAGER}._load_lora_adapter_from_tensors", "AROUND",
      loses="host residency and bytes of adapters loaded from tensors")
def load_lora_adapter_from_tensors(original: Any, self: Any, lora_ref: Any, *args: Any, **kwargs: Any) -> Any:
    """Weights handed over in memory (RL trainers push a new version every step); counted on
    the tokenizer side like any later load, held in host memory like one from disk."""
    start = time.perf_counter()
    result = original(self, lora_ref, *args, **kwargs)
    safely("manager_load_tensors", _loaded, self, lora_ref, result, time.perf_counter() - start)
    return result


def _before_unload(self: Any, lora_ref: Any) -> tuple[Any, bool] | None:
    ref = self.lora_refs.get(lora_ref.lora_id)
    pool = getattr(self, "memory_pool", None)
    in_slot = pool is not None and lora_ref.lora_id in pool.uid_to_buffer_id
    return (ref, in_slot) if ref is not None else None


def _unloaded(self: Any, before: tuple[Any, bool] | None, result: Any) -> None:
    if before is None or not result.success:
        return
    ref, was_in_slot = before
    last_slot_load_s.pop(ref.lora_id, None)
    runtime.emit(ev.Residency(ref.lora_name, "host", False, 0, bool(ref.pinned), not reporting_rank()))
    if was_in_slot:
        pool, pool_only = self.memory_pool, not counts_the_pool()
        runtime.emit(ev.Residency(ref.lora_name, "gpu", False, slot_bytes(pool), bool(ref.pinned), pool_only))
        runtime.emit(pool_state(pool, self.lora_refs, pool_only))
    runtime.get().flush()


@hook("manager_unload", f"{MANAGER}._unload_lora_adapter", "AROUND",
      loses="residency and bytes leaving both tiers on unload")
def unload_lora_adapter(original: Any, self: Any, lora_ref: Any, *args: Any, **kwargs: Any) -> Any:
    before = safely("manager_unload", _before_unload, self, lora_ref)
    result = original(self, lora_ref, *args, **kwargs)
    safely("manager_unload", _unloaded, self, before, result)
    return result


_UNION_TOO_LARGE = "more LoRA adapters than the memory pool can hold"


def _overflowed(self: Any, batch: Any, error: ValueError) -> None:
    if _UNION_TOO_LARGE not in str(error):
        return
    runtime.emit(ev.PoolOverflow(len(set(batch.lora_ids)), self.max_loras_per_batch, str(error)))
    runtime.get().flush()  # the scheduler is about to die: the log line and the count go out now


@hook("manager_dp_union", f"{MANAGER}.prepare_lora_batch", "AROUND",
      loses="pool_union_overflows_total (DP attention's union of adapters exceeding the pool)")
def prepare_lora_batch(original: Any, self: Any, forward_batch: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return original(self, forward_batch, *args, **kwargs)
    except ValueError as error:
        safely("manager_dp_union", _overflowed, self, forward_batch, error)
        raise
