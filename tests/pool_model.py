"""An independent model of SGLang's adapter pool for single sequential requests.

Written from SGLang's documented rules, not from our hooks: the base model holds a slot
from start-up and is a victim only when nothing else can be; every forward batch marks
its adapters used; LRU evicts the least recently used, FIFO the earliest inserted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE = "__base__"


@dataclass
class PoolModel:
    slots: int
    policy: str = "lru"
    resident: list[str] = field(default_factory=lambda: [BASE])
    order: list[str] = field(default_factory=list)  # tracked adapters, oldest first

    def request(self, name: str) -> tuple[bool, str | None]:
        """Serve one request; returns (gpu hit, evicted adapter or None)."""
        hit = name in self.resident
        if name != BASE:
            if self.policy == "lru" and name in self.order:
                self.order.remove(name)
            if name not in self.order:
                self.order.append(name)
        if hit:
            return True, None
        victim = None
        if len(self.resident) >= self.slots:
            candidates = [r for r in self.resident if r not in (name, BASE)] or [BASE]
            victim = next((r for r in self.order if r in candidates), BASE)
            self.resident.remove(victim)
            if victim in self.order:
                self.order.remove(victim)
        self.resident.append(name)
        return False, victim

    def unload(self, name: str) -> None:
        if name in self.resident:
            self.resident.remove(name)
        if name in self.order:
            self.order.remove(name)
