"""How a hook is declared and guarded.

Each component module declares its hooks with :func:`hook`; :mod:`lora_telemetry.hooks`
is the one place that installs them. Every hook body runs through :func:`safely`: an
exception inside telemetry is swallowed, counted in ``sglang_lora_telemetry_errors_total``
and logged once per hook; SGLang's own call is never repeated, skipped or altered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.ranks import reporting_rank

logger = logging.getLogger("lora_telemetry")
T = TypeVar("T")


@dataclass(frozen=True)
class HookSpec:
    name: str  # short name, used in metrics and in the fault switch
    target: str  # dotted path in SGLang
    kind: str  # BEFORE | AFTER | AROUND
    fn: Callable
    loses: str = ""  # what is not reported when the target is missing (doctor says it)
    # For a feature the user turns on: installed only when this says the configuration asks for it;
    # a missing target then refuses the feature with one message instead of a lost series.
    wanted: Callable[[Any], bool] | None = None


DECLARED: list[HookSpec] = []
_failed_once: set[str] = set()


def hook(name: str, target: str, kind: str, loses: str,
         wanted: Callable[[Any], bool] | None = None) -> Callable[[Callable], Callable]:
    """Declare ``fn`` as the hook ``name`` on SGLang's ``target``; ``loses`` says what goes
    unreported in an SGLang where the target is missing; ``wanted(config)``, if given, says
    whether the configuration turns the hook's feature on."""

    def declare(fn: Callable) -> Callable:
        DECLARED.append(HookSpec(name, target, kind, fn, loses, wanted))
        return fn

    return declare


class InjectedFault(RuntimeError):
    """Raised inside a hook by the test-only fault switch ``LORA_TELEMETRY_FAULT_HOOKS``."""


# The test-only fault switch: None (no faults: the fast path), a fixed set of hook names,
# or "@FILE": the names listed in FILE, re-read at most every FAULT_FILE_POLL_S, so that a
# test can make one hook after another fail on a running server.
_faults: list[frozenset[str] | str | None] = []
_fault_file = {"checked": 0.0, "names": frozenset()}
FAULT_FILE_POLL_S = 0.2


def _faulty(name: str) -> bool:
    if not _faults:
        names = runtime.get().config.fault_hooks
        file = next((n[1:] for n in names if n.startswith("@")), None)
        _faults.append(file or names or None)
    mode = _faults[0]
    if isinstance(mode, str):
        now = time.monotonic()
        if now - _fault_file["checked"] >= FAULT_FILE_POLL_S:
            _fault_file["checked"] = now
            try:
                _fault_file["names"] = frozenset(Path(mode).read_text().split())
            except OSError:
                _fault_file["names"] = frozenset()
        return name in _fault_file["names"]
    return mode is not None and name in mode


def safely(name: str, fn: Callable[..., T], *args: Any) -> T | None:
    """Run ``fn(*args)`` for hook ``name``; swallow, count and log what it raises."""
    try:
        if _faults and _faults[0] is None:
            return fn(*args)
        if _faulty(name):
            raise InjectedFault(f"fault injected into hook {name}")
        return fn(*args)
    except Exception as error:
        try:
            if reporting_rank():  # the other ranks of a replica fail alike: count it once, log it everywhere
                runtime.emit(ev.HookFailed(name, repr(error)))
            if name not in _failed_once:
                _failed_once.add(name)
                logger.warning("lora_telemetry hook %s failed (counted; later failures are not logged): %r",
                               name, error)
        except Exception:
            pass
        return None
