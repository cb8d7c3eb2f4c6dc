"""The hooks we attach to SGLang, one module per component observed.

Importing the component modules declares their hooks (:data:`base.DECLARED`);
:func:`install` is the one place that checks each target exists in the installed SGLang and
registers it with SGLang's ``HookRegistry``. A missing target disables that hook only.
"""

from __future__ import annotations

import logging
import pkgutil

from lora_telemetry import config
from lora_telemetry.hooks import http_server, lora_manager, memory_pool, on_demand, scheduler, tokenizer
from lora_telemetry.hooks.base import DECLARED, HookSpec

COMPONENTS = (tokenizer, on_demand, lora_manager, memory_pool, scheduler, http_server)
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


def install() -> dict[str, bool]:
    """Register every hook whose target exists; warn once for each that does not."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    active = status()
    for spec in DECLARED:
        if active[spec.name]:
            HookRegistry.register(spec.target, spec.fn, HookType[spec.kind])
    for name in sorted(n for n, ok in active.items() if not ok):
        missing = [s.target for s in DECLARED if s.name == name]
        logger.warning("lora_telemetry: hook %s disabled, target missing in this SGLang: %s",
                       name, ", ".join(missing))
    return active


__all__ = ["COMPONENTS", "DECLARED", "HookSpec", "install", "status", "target_exists"]
