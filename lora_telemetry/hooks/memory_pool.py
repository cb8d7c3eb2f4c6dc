"""LoRA memory pool (scheduler process): slot loads, evictions, residency in the gpu tier.

``LoRAMemoryPool.prepare_lora_batch`` runs once per forward pass. When every adapter of
the batch already holds a slot nothing can change, so the hook returns after one
membership test per adapter; otherwise it diffs the slot map before and after.
"""

from __future__ import annotations

import time
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.ranks import reporting_rank

POOL = "sglang.srt.lora.mem_pool.LoRAMemoryPool"
_copy_seconds: dict[Any, float] = {}
_capacity: dict[int, int] = {}


def lora_name(uid: Any, refs: dict) -> str:
    if uid is None:
        return ev.BASE
    ref = refs.get(uid)
    return ref.lora_name if ref is not None else str(uid)


def pool_bytes(pool: Any) -> int:
    """Bytes of every slot buffer of the pool (computed once per pool)."""
    key = id(pool)
    if key not in _capacity:
        total = 0
        for buffers in (*pool.A_buffer.values(), *pool.B_buffer.values()):
            total += sum(t.numel() * t.element_size() for t in buffers)
        for name in ("embedding_A_buffer", "embedding_B_buffer", "lm_head_A_buffer",
                     "lm_head_B_buffer", "new_embeddings_buffer"):
            total += sum(t.numel() * t.element_size() for t in getattr(pool, name, {}).values())
        _capacity[key] = total
    return _capacity[key]


def slot_bytes(pool: Any) -> int:
    return pool_bytes(pool) // pool.max_loras_per_batch


def pool_state(pool: Any, refs: dict) -> ev.PoolState:
    held = [uid for uid in pool.uid_to_buffer_id]
    pinned = sum(1 for uid in held if uid is not None and getattr(refs.get(uid), "pinned", False))
    return ev.PoolState(used=len(held), free=pool.max_loras_per_batch - len(held), pinned=pinned,
                        capacity_bytes=pool_bytes(pool))


def _is_pinned(uid: Any, refs: dict) -> bool:
    return uid is not None and bool(getattr(refs.get(uid), "pinned", False))


def _diff(pool: Any, before: dict, cur_uids: Any, refs: dict) -> None:
    after = pool.uid_to_buffer_id
    size = slot_bytes(pool)
    for victim in before.keys() - after.keys():
        name = lora_name(victim, refs)
        runtime.emit(ev.SlotEvicted(name, before[victim]))
        runtime.emit(ev.Residency(name, "gpu", False, size, _is_pinned(victim, refs)))
    for uid in cur_uids:
        if uid not in before and uid in after:
            name = lora_name(uid, refs)
            runtime.emit(ev.SlotLoaded(name, after[uid], _copy_seconds.pop(uid, 0.0)))
            runtime.emit(ev.Residency(name, "gpu", True, size, _is_pinned(uid, refs)))
    runtime.emit(pool_state(pool, refs))


def _slot_map_before(pool: Any, cur_uids: Any) -> dict | None:
    """The slot map before the call, or None when every adapter of the batch holds a slot
    (nothing can change: the common case, one set comparison)."""
    slots = pool.uid_to_buffer_id
    return None if slots.keys() >= cur_uids else dict(slots)


_settings: dict[int, ev.PoolSettings] = {}


def pool_settings(pool: Any) -> ev.PoolSettings:
    key = id(pool)
    if key not in _settings:
        policy = type(pool.eviction_policy).__name__.removesuffix("EvictionPolicy").lower()
        _settings[key] = ev.PoolSettings(pool.max_loras_per_batch, policy, slot_bytes(pool))
    return _settings[key]


def _record(pool: Any, cur_uids: Any, refs: dict) -> None:
    """The batch in the order SGLang marks it: base model first, then by adapter id."""
    ordered = sorted(cur_uids, key=lambda uid: (uid is not None, uid or ""))
    runtime.emit(ev.PoolBatch(time.time(), tuple(lora_name(uid, refs) for uid in ordered), pool_settings(pool)))


@hook("pool_prepare_batch", f"{POOL}.prepare_lora_batch", "AROUND")
def prepare_lora_batch(original: Any, self: Any, cur_uids: Any, *args: Any, **kwargs: Any) -> Any:
    before = safely("pool_prepare_batch", _slot_map_before, self, cur_uids)
    result = original(self, cur_uids, *args, **kwargs)
    recording = runtime.get().config.access_log is not None
    if (before is not None or recording) and reporting_rank():
        refs = kwargs.get("lora_refs", args[2] if len(args) > 2 else {})
        if before is not None:
            safely("pool_prepare_batch", _diff, self, before, cur_uids, refs)
        if recording:
            safely("pool_prepare_batch", _record, self, cur_uids, refs)
    return result


@hook("pool_slot_copy", f"{POOL}.load_lora_weight_to_buffer", "AROUND")
def load_lora_weight_to_buffer(original: Any, self: Any, uid: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    result = original(self, uid, *args, **kwargs)
    safely("pool_slot_copy", _copy_seconds.__setitem__, uid, time.perf_counter() - start)
    return result
