"""Loading a plan's adapters at start, before requests arrive.

Shared by servers (:mod:`lora_telemetry.hooks.preload`, through SGLang's own
``/load_lora_adapter``) and :class:`lora_telemetry.engine.LoRAEngine` (through the engine).
Loads are counted with trigger ``preload``. An adapter that cannot be found or loaded is one
warning naming it; the others load and serving starts anyway. An adapter the plan pins that is
already loaded unpinned (by ``--lora-paths``, or by a request that came before the plan) is
unloaded and loaded again pinned: SGLang pins only at load time, and a plan whose pin is
silently lost predicts a pool that never runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lora_telemetry.plan import Plan

logger = logging.getLogger("lora_telemetry")
# A load: (name, folder, pinned) -> None when loaded, else SGLang's error message.
Load = Callable[[str, str, bool], "str | None"]
# An unload: name -> None when unloaded, else SGLang's error message.
Unload = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Loaded:
    """An adapter SGLang holds already: where it came from, and whether it was pinned."""

    path: str
    pinned: bool


@dataclass
class PreloadReport:
    loaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # loaded before the plan (e.g. --lora-paths)
    repinned: list[str] = field(default_factory=list)  # loaded before the plan unpinned, loaded again pinned
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _repin(name: str, before: Loaded, load: Load, unload: Unload, report: PreloadReport) -> None:
    # Without a path (weights handed over in memory) it could not be loaded again: left as it is.
    error = unload(name) if before.path else "it was loaded from weights in memory, not from a folder"
    if error is None:
        error = load(name, before.path, True)
        if error is None:
            report.repinned.append(name)
            return
        if load(name, before.path, False) is not None:
            report.failed[name] = error
            logger.error("lora_telemetry: plan adapter %r was unloaded to pin it and could be loaded again neither "
                         "pinned (%s) nor unpinned; serving without it", name, error)
            return
    report.failed[name] = error
    logger.warning("lora_telemetry: plan adapter %r was loaded unpinned and could not be pinned: %s; serving it "
                   "unpinned", name, error)


def preload(plan: Plan, find: Callable[[str], str | None], loaded: Mapping[str, Loaded], load: Load,
            unload: Unload) -> PreloadReport:
    """Load every adapter of ``plan`` not in ``loaded``, pinned as it says, in the plan's order;
    pin those of ``loaded`` that it pins and SGLang holds unpinned."""
    report = PreloadReport()
    for name in plan.preload:
        if name in loaded:
            if name in plan.pin and not loaded[name].pinned:
                _repin(name, loaded[name], load, unload, report)
            else:
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
    logger.info("lora_telemetry: plan preloaded %d adapters (%d pinned)%s%s", len(report.loaded),
                sum(1 for name in report.loaded if name in plan.pin),
                f"; {len(report.already)} were loaded already" if report.already else "",
                f"; pinned {', '.join(report.repinned)}, loaded unpinned before, by loading again"
                if report.repinned else "")
    return report

