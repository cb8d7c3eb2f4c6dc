"""Rendering that lets the event loop in: a worker thread that gives the GIL away every millisecond.

A render of 10,000 adapters' series is 100-200 ms of Python in SGLang's main process. Run in a
worker thread it is off the event loop, but not off the interpreter lock: the loop thread waits
for the lock until the interpreter's switch interval (5 ms) makes the worker let go, again and
again, and the requests the loop serves meanwhile wait with it (a scrape a second at 10,000
adapters doubled TTFT p99 on the test bed). A :class:`Pacer` makes the worker sleep briefly
after each slice of work, so that the loop gets the lock at once whenever it wants it.
"""

from __future__ import annotations

import time

SLICE_S = 0.001  # work this long, then let the other threads in
PAUSE_S = 0.0005  # long enough for a waiting thread to wake and take the lock (0.1 ms is not, on 2 cores)


class Pacer:
    """Call :meth:`pause` between steps of work (a few thousand series each); it sleeps ``PAUSE_S``
    once ``SLICE_S`` of work has passed since the last sleep. A pacer made with ``enabled=False``
    never sleeps (synchronous callers, benchmarks of CPU time)."""

    __slots__ = ("enabled", "started")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def pause(self) -> None:
        if self.enabled and time.perf_counter() - self.started >= SLICE_S:
            time.sleep(PAUSE_S)
            self.started = time.perf_counter()


UNPACED = Pacer(enabled=False)
