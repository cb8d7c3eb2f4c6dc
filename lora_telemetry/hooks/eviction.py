"""Eviction policy (scheduler process): adapter priorities, when the configuration gives any.

Installed only then (``LORA_TELEMETRY_PRIORITIES``, a plan's priorities, ``LoRAEngine(priorities=...)``);
otherwise SGLang's pool keeps its own policy and none of this runs. SGLang builds its pool's
policy with ``get_eviction_policy``; ours answers instead, on every rank alike. Once the
scheduler is built, the policy gets the adapter names (the manager's refs) and the waiting
queue whose requests lift their adapters, and the running batch whose adapters it keeps while
another candidate is left. In an SGLang without ``get_eviction_policy`` the option is refused at
start with one message (:func:`lora_telemetry.hooks.install`).
"""

from __future__ import annotations

import logging
from typing import Any

from lora_telemetry import config
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.scheduler import SCHEDULER
from lora_telemetry.priorities import LIMIT, PriorityEvictionPolicy

logger = logging.getLogger("lora_telemetry")
FACTORY = "sglang.srt.lora.eviction_policy.get_eviction_policy"
FEATURE = "adapter priorities (LORA_TELEMETRY_PRIORITIES, a plan's priorities, LoRAEngine(priorities=...))"


def _wanted(cfg: Any) -> bool:
    return bool(cfg.priorities)


def _policy() -> PriorityEvictionPolicy | None:
    priorities = config.get().priorities
    if not priorities:
        return None
    logger.info("lora_telemetry: adapter priorities for %d adapters choose the pool's victims "
                "(lowest first, least recently used within a priority)", len(priorities))
    return PriorityEvictionPolicy(priorities)


@hook("eviction_priority", FACTORY, "AROUND", loses=FEATURE, wanted=_wanted)
def get_eviction_policy(original: Any, *args: Any, **kwargs: Any) -> Any:
    """SGLang's own is still made (its checks of --lora-eviction-policy hold) and kept if ours fails."""
    stock = original(*args, **kwargs)
    policy = safely("eviction_priority", _policy)
    return policy if policy is not None else stock


def waiting_priorities(scheduler: Any) -> dict[str, int]:
    """Adapter id -> the highest priority among its waiting requests, larger kept longer (SGLang's
    ``--schedule-low-priority-values-first`` turned round); requests without one lift nothing."""
    sign = -1 if getattr(scheduler, "schedule_low_priority_values_first", False) else 1
    lifted: dict[str, int] = {}
    for req in scheduler.waiting_queue:
        priority = getattr(req, "priority", None)
        if priority is None or req.lora_id is None:
            continue
        value = max(-LIMIT, min(LIMIT, sign * priority))
        if value > lifted.get(req.lora_id, -LIMIT - 1):
            lifted[req.lora_id] = value
    return lifted


def running_adapters(scheduler: Any) -> set:
    """Ids of adapters with unfinished requests in the running (decoding) batch."""
    batch = scheduler.running_batch
    return {req.lora_id for req in (batch.reqs if batch is not None else ()) if req.finished_reason is None}


def _attach(scheduler: Any) -> None:
    manager = getattr(scheduler.tp_worker.model_runner, "lora_manager", None)
    policy = getattr(getattr(manager, "memory_pool", None), "eviction_policy", None)
    if isinstance(policy, PriorityEvictionPolicy):
        refs = manager.lora_refs
        policy.name_of = lambda uid: getattr(refs.get(uid), "lora_name", None)
        policy.lifted = lambda: waiting_priorities(scheduler)
        policy.running = lambda: running_adapters(scheduler)


@hook("eviction_priority", f"{SCHEDULER}.__init__", "AFTER", loses=FEATURE, wanted=_wanted)
def scheduler_init(result: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    if getattr(self, "enable_lora", False):
        safely("eviction_priority", _attach, self)
