"""The hooks we attach to SGLang, one module per component observed.

Importing the component modules declares their hooks (:data:`base.DECLARED`);
:func:`install` is the one place that checks each target exists in the installed SGLang and
registers it with SGLang's ``HookRegistry``. A missing target disables that hook only.
"""

from __future__ import annotations

import logging
import multiprocessing
import pkgutil

from lora_telemetry import config
from lora_telemetry.hooks import (
    drainer,
    eviction,
    http_server,
    lora_manager,
    memory_pool,
    on_demand,
    preload,
    scheduler,
    tokenizer,
)
from lora_telemetry.hooks.base import DECLARED, HookSpec

COMPONENTS = (tokenizer, on_demand, preload, lora_manager, memory_pool, eviction, scheduler, drainer, http_server)
logger = logging.getLogger("lora_telemetry")


def target_exists(target: str) -> bool:
    if target in config.get().hidden_targets:
        return False
    owner, _, attr = target.rpartition(".")
    try:
        return hasattr(pkgutil.resolve_name(owner), attr)
    except Exception:
        return False


def status() -> dict[str, bool]:
    """Hook name -> whether every target of that hook exists in this SGLang."""
    found: dict[str, bool] = {}
    for spec in DECLARED:
        found[spec.name] = found.get(spec.name, True) and target_exists(spec.target)
    return found


def _unwanted() -> set[str]:
    """Hooks of features the configuration leaves off: not installed, nothing lost."""
    cfg = config.get()
    return {spec.name for spec in DECLARED if spec.wanted is not None and not spec.wanted(cfg)}


def install() -> dict[str, bool]:
    """Register every wanted hook whose target exists; warn once for each that does not.
    Returns hook name -> attached, for the hooks this configuration wants."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    active, unwanted = status(), _unwanted()
    for spec in DECLARED:
        if active[spec.name] and spec.name not in unwanted:
            HookRegistry.register(spec.target, spec.fn, HookType[spec.kind])
    for name in sorted(n for n, ok in active.items() if not ok and n not in unwanted):
        specs = [s for s in DECLARED if s.name == name]
        missing = ", ".join(s.target for s in specs if not target_exists(s.target))
        if specs[0].wanted is None:
            logger.warning("lora_telemetry: hook %s disabled, target missing in this SGLang: %s", name, missing)
        elif multiprocessing.parent_process() is None:  # said once, by the process SGLang was started as
            logger.error("lora_telemetry: %s refused: this SGLang has no %s; it runs with its own behaviour",
                         specs[0].loses, missing)
    return {name: ok for name, ok in active.items() if name not in unwanted}


__all__ = ["COMPONENTS", "DECLARED", "HookSpec", "install", "status", "target_exists"]
