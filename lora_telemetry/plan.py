"""A pin plan: which adapters to load at start, which of them to pin, which priorities to set.

Written by ``lora-telemetry advise FILE --plan OUT`` with the hit rates it predicts; read by
servers (``LORA_TELEMETRY_PLAN``) and by ``LoRAEngine(plan=...)``. JSON, version 1::

    {"version": 1, "slots": 4,
     "preload": ["qa", "sql", "chat"],       loaded at start, from the adapter directory
     "pin": ["qa"],                          of those, loaded pinned (never evicted)
     "priorities": {"sql": 1, "chat": 1},    see lora_telemetry.priorities
     "predicted": {...}}                     what advise expects; informative only

SGLang refuses to pin the last free slot (the base model and unpinned adapters need one), so a
plan pins fewer adapters than the pool has slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_telemetry.adapters import name_problem
from lora_telemetry.priorities import PriorityError, check_priorities

VERSION = 1
_KEYS = {"version", "slots", "preload", "pin", "priorities", "predicted"}


class PlanError(ValueError):
    """A plan we cannot use; says which and why."""


@dataclass(frozen=True)
class Plan:
    slots: int  # the --max-loras-per-batch it was made for
    preload: tuple[str, ...] = ()
    pin: tuple[str, ...] = ()
    priorities: dict[str, int] = field(default_factory=dict)
    predicted: dict[str, Any] = field(default_factory=dict)

    def check_fits(self, slots: int) -> None:
        """Refuse a plan that would pin every slot of a pool of ``slots``."""
        if len(self.pin) >= slots:
            raise PlanError(f"the plan pins {len(self.pin)} adapters but the pool has {slots} slots "
                            f"(--max-loras-per-batch): SGLang needs one slot left unpinned for the base model "
                            f"and every other adapter; pin at most {slots - 1}")

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "slots": self.slots, "preload": list(self.preload),
                           "pin": list(self.pin), "priorities": self.priorities, "predicted": self.predicted},
                          indent=1)


def _names(value: Any, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PlanError(f"{source}: {key!r} must be a list of adapter names")
    for name in value:
        problem = name_problem(name)
        if problem:
            raise PlanError(f"{source}: {key!r}: adapter {name!r}: {problem}")
    if len(set(value)) != len(value):
        raise PlanError(f"{source}: {key!r} names an adapter twice")
    return tuple(value)


def parse(data: Any, source: str = "plan") -> Plan:
    if not isinstance(data, dict):
        raise PlanError(f"{source}: expected a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise PlanError(f"{source}: unknown keys {sorted(unknown)}; a plan has {sorted(_KEYS)}")
    if data.get("version") != VERSION:
        raise PlanError(f"{source}: version {data.get('version')!r}; this lora_telemetry reads version {VERSION}")
    slots = data.get("slots")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise PlanError(f"{source}: 'slots' must be a positive integer, not {slots!r}")
    preload, pin = _names(data.get("preload", []), "preload", source), _names(data.get("pin", []), "pin", source)
    missing = [name for name in pin if name not in preload]
    if missing:
        raise PlanError(f"{source}: pins {missing} without preloading them; a pinned adapter is loaded pinned")
    try:
        priorities = check_priorities(data.get("priorities", {}), f"{source}: 'priorities'")
    except PriorityError as error:
        raise PlanError(str(error)) from None
    predicted = data.get("predicted", {})
    plan = Plan(slots, preload, pin, priorities, predicted if isinstance(predicted, dict) else {})
    plan.check_fits(slots)
    return plan


def _json(path: Path, error: type[ValueError]) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as failure:
        raise error(f"{path}: cannot read: {failure.strerror}") from None
    except ValueError as failure:
        raise error(f"{path}: not JSON: {failure}") from None


def read(path: Path) -> Plan:
    """The plan in ``path``; :class:`PlanError` names the file and the problem."""
    return parse(_json(path, PlanError), str(path))


def read_priorities(path: Path) -> dict[str, int]:
    """A priorities file: a JSON object of adapter names to integers."""
    return check_priorities(_json(path, PriorityError), str(path))
