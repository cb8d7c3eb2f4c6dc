"""Eviction forensics: when each adapter lost its pool slot, and what that cost when it came back.

An eviction is harmless if its victim is not needed for a long time; it is thrash when the
victim is needed again soon, so the pool spent a copy to make room and another to undo it.
The ledger keeps the time of each adapter's last eviction until its next slot load, which is
then a *reuse* after that many seconds, and a *thrash reload* within the configured window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reuse:
    seconds: float  # from the adapter's last eviction to this slot load
    thrash: bool  # within the thrash window


class EvictionLedger:
    """Per adapter name, the time of its last eviction not yet followed by a slot load.

    Holds at most one entry per adapter that is out of the pool after an eviction."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._evicted_at: dict[str, float] = {}

    def evicted(self, name: str, at: float) -> None:
        self._evicted_at[name] = at

    def loaded(self, name: str, at: float) -> Reuse | None:
        """A slot load of ``name`` at ``at``: its reuse, or None if it was never evicted."""
        since = self._evicted_at.pop(name, None)
        if since is None:
            return None
        seconds = max(0.0, at - since)
        return Reuse(seconds, seconds <= self.window_s)
