"""Loading a plan's adapters at start, before requests arrive.

Shared by servers (:mod:`lora_telemetry.hooks.preload`, through SGLang's own
``/load_lora_adapter``) and :class:`lora_telemetry.engine.LoRAEngine` (through the engine).
Loads are counted with trigger ``preload``. An adapter that cannot be found or loaded is one
warning naming it; the others load and serving starts anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from lora_telemetry.plan import Plan

logger = logging.getLogger("lora_telemetry")
# A load: (name, folder, pinned) -> None when loaded, else SGLang's error message.
Load = Callable[[str, str, bool], "str | None"]


@dataclass
class PreloadReport:
    loaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # loaded before the plan (e.g. --lora-paths)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def preload(plan: Plan, find: Callable[[str], str | None], loaded: Collection[str], load: Load) -> PreloadReport:
    """Load every adapter of ``plan`` not in ``loaded``, pinned as it says, in the plan's order."""
    report = PreloadReport()
    for name in plan.preload:
        if name in loaded:
            report.already.append(name)
            continue
        folder = find(name)
        if folder is None:
            report.missing.append(name)
            logger.warning("lora_telemetry: plan adapter %r is not in the adapter directory; serving without it",
                           name)
            continue
        error = load(name, folder, name in plan.pin)
        if error is None:
            report.loaded.append(name)
        else:
            report.failed[name] = error
            logger.warning("lora_telemetry: plan adapter %r could not be loaded: %s; serving without it", name, error)
    logger.info("lora_telemetry: plan preloaded %d adapters (%d pinned)%s", len(report.loaded),
                sum(1 for name in report.loaded if name in plan.pin),
                f"; {len(report.already)} were loaded already" if report.already else "")
    return report
