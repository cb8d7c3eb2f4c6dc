"""How a hook is declared and guarded.

Each component module declares its hooks with :func:`hook`; :mod:`lora_telemetry.hooks`
is the one place that installs them. Every hook body runs through :func:`safely`: an
exception inside telemetry is swallowed, counted in ``sglang_lora_telemetry_errors_total``
and logged once per hook; SGLang's own call is never repeated, skipped or altered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lora_telemetry import events as ev
from lora_telemetry import runtime

logger = logging.getLogger("lora_telemetry")
T = TypeVar("T")


@dataclass(frozen=True)
class HookSpec:
    name: str  # short name, used in metrics and in the fault switch
    target: str  # dotted path in SGLang
    kind: str  # BEFORE | AFTER | AROUND
    fn: Callable


DECLARED: list[HookSpec] = []
_failed_once: set[str] = set()


def hook(name: str, target: str, kind: str) -> Callable[[Callable], Callable]:
    """Declare ``fn`` as the hook ``name`` on SGLang's ``target``."""

    def declare(fn: Callable) -> Callable:
        DECLARED.append(HookSpec(name, target, kind, fn))
        return fn

    return declare


class InjectedFault(RuntimeError):
    """Raised inside a hook by the test-only fault switch ``LORA_TELEMETRY_FAULT_HOOKS``."""


_faults: list[frozenset[str]] = []


def _faulty(name: str) -> bool:
    if not _faults:
        _faults.append(runtime.get().config.fault_hooks)
    return name in _faults[0]


def safely(name: str, fn: Callable[..., T], *args: Any) -> T | None:
    """Run ``fn(*args)`` for hook ``name``; swallow, count and log what it raises."""
    try:
        if _faults and not _faults[0]:
            return fn(*args)
        if _faulty(name):
            raise InjectedFault(f"fault injected into hook {name}")
        return fn(*args)
    except Exception as error:
        try:
            runtime.emit(ev.HookFailed(name, repr(error)))
            if name not in _failed_once:
                _failed_once.add(name)
                logger.warning("lora_telemetry hook %s failed (counted; later failures are not logged): %r",
                               name, error)
        except Exception:
            pass
        return None
