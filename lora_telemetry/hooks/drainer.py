"""LoRA drainer (scheduler process): drain episodes, which SGLang logs at debug level only.

With ``--lora-drain-wait-threshold`` SGLang's ``LoRADrainer`` watches for an adapter whose
requests waited too long while every slot is held, and marks a running adapter as draining for
it: that adapter's new requests are held back until its running ones are done and its slot can
go to the starving adapter. Each pass of ``update_draining_state`` may start and end episodes;
after it, the adapters marked draining are compared with those we saw marked: a new one starts
an episode (which adapter drains, for which), one no longer marked ends it, with its duration.
The comparison walks the drainer's adapter table, as the drainer itself does several times a pass.
"""

from __future__ import annotations

import time
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.memory_pool import lora_name
from lora_telemetry.hooks.ranks import reporting_rank
from lora_telemetry.hooks.scheduler import SCHEDULER

DRAINER = "sglang.srt.lora.lora_drainer.LoRADrainer"
_episodes: dict[int, dict[Any, tuple[Any, float, str, str]]] = {}  # drainer -> adapter id -> (for, start, names)
_refs: dict[int, Any] = {}  # drainer -> its scheduler's adapter refs, for names


def _watch(scheduler: Any) -> None:
    drainer = getattr(scheduler, "lora_drainer", None)
    if drainer is not None:
        _refs[id(drainer)] = scheduler.tp_worker.model_runner.lora_manager.lora_refs


def _compare(drainer: Any) -> None:
    now = time.monotonic()
    draining = {uid: stats.is_draining_for for uid, stats in drainer.adapter_to_stats.items()
                if stats.is_draining_for is not None}
    seen = _episodes.setdefault(id(drainer), {})
    if not draining and not seen:
        return
    refs = _refs.get(id(drainer), {})
    for uid, (starving, start, name, for_name) in list(seen.items()):
        if draining.get(uid) != starving:
            del seen[uid]
            runtime.emit(ev.DrainEnded(name, for_name, now - start))
    for uid, starving in draining.items():
        if uid not in seen:
            name, for_name = lora_name(uid, refs), lora_name(starving, refs)
            seen[uid] = (starving, now, name, for_name)
            runtime.emit(ev.DrainStarted(name, for_name))


@hook("drainer_episodes", f"{DRAINER}.update_draining_state", "AFTER",
      loses="drain_seconds and the drain start and end log lines (--lora-drain-wait-threshold)")
def update_draining_state(result: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    if reporting_rank():
        safely("drainer_episodes", _compare, self)


@hook("drainer_episodes", f"{SCHEDULER}.__init__", "AFTER", loses="adapter names in drain episodes")
def scheduler_init(result: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    """The scheduler made its drainer (with ``--lora-drain-wait-threshold``): its refs name the adapters."""
    safely("drainer_episodes", _watch, self)
