"""LoRA memory pool (scheduler process): slot loads, evictions, residency in the gpu tier.

``LoRAMemoryPool.prepare_lora_batch`` runs once per forward pass (with SGLang's
``--enable-lora-overlap-loading``: once per adapter load started at admission). When every
adapter asked for already holds a slot nothing can change, so the hook returns after one
membership test per adapter; otherwise it diffs the slot map before and after. Every rank
reports the bytes it holds; only the reporting rank counts (:mod:`.ranks`).

Slot copies are timed around ``load_lora_weight_to_buffer``. With overlap loading that call
only launches a non-blocking copy on a side stream, so the copy is timed until SGLang's
overlap loader finds its completion event done; and the pinned host copy SGLang then keeps
of the adapter is added to the adapter's host bytes.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from lora_telemetry import config, runtime
from lora_telemetry import events as ev
from lora_telemetry.forensics import EvictionLedger
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.ranks import counts_the_pool
from lora_telemetry.hooks.sizes import adapter_bytes, pool_bytes, slot_bytes, weight_bytes

POOL = "sglang.srt.lora.mem_pool.LoRAMemoryPool"
OVERLAP_LOADER = "sglang.srt.lora.lora_overlap_loader.LoRAOverlapLoader"
_copy_seconds: dict[Any, float] = {}  # uid -> seconds of the blocking copy just made
_copy_started: dict[Any, float] = {}  # uid -> perf_counter when its overlapped copy was launched
# uid -> seconds of its last blocking slot load: the slot_load phase of the requests that waited for it.
# Kept when the adapter is evicted (the overlap scheduler reads a batch's results after the next batch
# ran, and that batch may have taken the slot); dropped when the adapter is unloaded.
last_slot_load_s: dict[Any, float] = {}
_launching = [False]  # inside SGLang's overlap loader, which launches copies on its side stream
# Why the batch being run copies adapters in, set by the scheduler's hook before it runs: "reload" for a
# decode step (its requests had all started, so a copy brings back an adapter evicted under them), else
# "admission". Overlap loading copies at admission only.
batch_cause = ["admission"]
_PINNED_COUNTED = "_lora_telemetry_pinned_counted"
# Adapters SGLang makes for itself, not served to anyone: UNO speculative decoding's draft.
INTERNAL_ADAPTERS = frozenset({"__uno_draft__"})
_INTERNAL_POOL = "_lora_telemetry_internal"


def lora_name(uid: Any, refs: dict) -> str:
    if uid is None:
        return ev.BASE
    ref = refs.get(uid)
    return ref.lora_name if ref is not None else str(uid)


def pool_state(pool: Any, refs: dict, memory_only: bool = False) -> ev.PoolState:
    held = [uid for uid in pool.uid_to_buffer_id]
    pinned = sum(1 for uid in held if uid is not None and getattr(refs.get(uid), "pinned", False))
    return ev.PoolState(used=len(held), free=pool.max_loras_per_batch - len(held), pinned=pinned,
                        capacity_bytes=pool_bytes(pool), memory_only=memory_only)


def overlap_loading(pool: Any) -> bool:
    return bool(getattr(pool, "enable_lora_overlap_loading", False))


def _is_pinned(uid: Any, refs: dict) -> bool:
    return uid is not None and bool(getattr(refs.get(uid), "pinned", False))


@functools.cache
def _ledger() -> EvictionLedger:
    """This process's ledger, with the configured window (read on first use, after SGLang's start)."""
    return EvictionLedger(config.get().thrash_window_s)


def _diff(pool: Any, before: dict, cur_uids: Any, refs: dict, adapters: dict, reports: bool) -> None:
    after = pool.uid_to_buffer_id
    size = slot_bytes(pool)
    overlap = overlap_loading(pool)
    cause = "admission" if overlap else batch_cause[0]
    now = time.monotonic()
    by_slot = {slot: uid for uid, slot in after.items()}
    for victim in before.keys() - after.keys():
        name, slot = lora_name(victim, refs), before[victim]
        if reports:
            _ledger().evicted(name, now)
            incoming = lora_name(by_slot[slot], refs) if slot in by_slot else None
            runtime.emit(ev.SlotEvicted(name, slot, incoming))
        runtime.emit(ev.Residency(name, "gpu", False, size, _is_pinned(victim, refs), not reports))
    for uid in cur_uids:
        if uid not in before and uid in after:
            name = lora_name(uid, refs)
            seconds = None if uid in _copy_started else _copy_seconds.pop(uid, 0.0)
            if seconds is not None:
                last_slot_load_s[uid] = seconds
            if reports:
                reuse = _ledger().loaded(name, now)
                copied = weight_bytes(adapters[uid]) if uid in adapters else 0
                runtime.emit(ev.SlotLoaded(name, after[uid], seconds, reuse and reuse.seconds,
                                           bool(reuse and reuse.thrash), copied, cause))
            runtime.emit(ev.Residency(name, "gpu", True, size, _is_pinned(uid, refs), not reports))
            if overlap:
                _count_pinned_copy(name, adapters.get(uid), _is_pinned(uid, refs))
    runtime.emit(pool_state(pool, refs, not reports))


def _count_pinned_copy(name: str, adapter: Any, pinned: bool) -> None:
    """Overlap loading keeps a pinned host copy of an adapter from its first slot load on."""
    if adapter is None or getattr(adapter, _PINNED_COUNTED, False):
        return
    setattr(adapter, _PINNED_COUNTED, True)
    if any(getattr(layer, "pinned_weights", None) for layer in getattr(adapter, "layers", ())):
        runtime.emit(ev.Residency(name, "host", True, adapter_bytes(adapter), pinned, memory_only=True))


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
        priorities = tuple(sorted(getattr(pool.eviction_policy, "priorities", {}).items()))
        _settings[key] = ev.PoolSettings(pool.max_loras_per_batch, policy, slot_bytes(pool), priorities)
    return _settings[key]


def _record(pool: Any, cur_uids: Any, refs: dict) -> None:
    """The batch in the order SGLang marks it: base model first, then by adapter id."""
    ordered = sorted(cur_uids, key=lambda uid: (uid is not None, uid or ""))
    runtime.emit(ev.PoolBatch(time.time(), tuple(lora_name(uid, refs) for uid in ordered), pool_settings(pool)))


def _internal_pool(pool: Any, refs: dict) -> bool:
    """A pool SGLang made for itself: UNO's LoRA manager loads its draft adapter before it makes
    its 2-slot pool, whose first batch (the base model's, ``LoRAManager.init_memory_pool``) sees the
    draft among the refs already. Decided at a pool's first batch, when its refs are few."""
    internal = getattr(pool, _INTERNAL_POOL, None)
    if internal is None:
        internal = any(getattr(ref, "lora_name", None) in INTERNAL_ADAPTERS for ref in refs.values())
        setattr(pool, _INTERNAL_POOL, internal)
    return internal


def _prepared(pool: Any, before: dict | None, cur_uids: Any, recording: bool, args: tuple, kwargs: dict) -> None:
    reports = counts_the_pool()
    refs = kwargs.get("lora_refs", args[2] if len(args) > 2 else {})
    if _internal_pool(pool, refs):
        return
    if before is not None:
        adapters = kwargs.get("lora_adapters", args[0] if args else {})
        _diff(pool, before, cur_uids, refs, adapters, reports)
    if recording and reports:  # with overlap loading, a load set started at admission
        _record(pool, cur_uids, refs)


@hook("pool_prepare_batch", f"{POOL}.prepare_lora_batch", "AROUND",
      loses="slot loads, evictions, pool_slots, gpu residency and bytes, pool capacity, access-log batches")
def prepare_lora_batch(original: Any, self: Any, cur_uids: Any, *args: Any, **kwargs: Any) -> Any:
    before = safely("pool_prepare_batch", _slot_map_before, self, cur_uids)
    result = original(self, cur_uids, *args, **kwargs)
    recording = runtime.get().config.access_log is not None
    if before is not None or recording:
        safely("pool_prepare_batch", _prepared, self, before, cur_uids, recording, args, kwargs)
    return result


def _copied(pool: Any, uid: Any, start: float) -> None:
    if _launching[0]:
        _copy_started[uid] = start
    else:
        _copy_seconds[uid] = time.perf_counter() - start


@hook("pool_slot_copy", f"{POOL}.load_lora_weight_to_buffer", "AROUND", loses="pool_slot_load_seconds")
def load_lora_weight_to_buffer(original: Any, self: Any, uid: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    result = original(self, uid, *args, **kwargs)
    safely("pool_slot_copy", _copied, self, uid, start)
    return result


def _copies_done(loader: Any, launched: list) -> None:
    now = time.perf_counter()
    pending, refs, reports = loader.lora_to_overlap_load_event, loader.lora_manager.lora_refs, counts_the_pool()
    for uid in launched:
        if uid not in pending:
            start = _copy_started.pop(uid, None)
            if start is not None and reports:
                runtime.emit(ev.SlotCopied(lora_name(uid, refs), now - start))


def _pending_copies(loader: Any) -> list:
    pending = loader.lora_to_overlap_load_event
    return list(pending) if pending else []


@hook("pool_overlap_copy_start", f"{OVERLAP_LOADER}._try_start_overlap_load", "AROUND",
      loses="pool_slot_load_seconds with --enable-lora-overlap-loading (launch time only)")
def try_start_overlap_load(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    """Copies made in here run on a side stream; the base model's slot at start-up is filled in line."""
    _launching[0] = True
    try:
        return original(self, *args, **kwargs)
    finally:
        _launching[0] = False


@hook("pool_overlap_copy_done", f"{OVERLAP_LOADER}._drain_completed_overlap_loads", "AROUND",
      loses="pool_slot_load_seconds with --enable-lora-overlap-loading")
def drain_completed_overlap_loads(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    """SGLang drops the completion events of finished copies here: those copies are done."""
    launched = safely("pool_overlap_copy_done", _pending_copies, self)
    if not launched:
        return original(self, *args, **kwargs)
    result = original(self, *args, **kwargs)
    safely("pool_overlap_copy_done", _copies_done, self, launched)
    return result
