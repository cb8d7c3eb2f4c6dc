"""Access logs from the bench: a schedule's requests, or a long synthetic run of batches.

``--record FILE`` writes the requests of the bench's own schedule as R records (what a
server's tokenizer would have written), so ``advise`` can size a pool for a workload before
it is ever served. The synthetic run models continuous batching (requests join, decode for
their output length, leave; at most ``width`` adapters per batch) to time ``advise`` on a
recording as long as a busy day's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lora_telemetry.bench.workload import Request as Scheduled
from lora_telemetry.capacity.recording import BASE, VERSION_LINE, Batch, Pool, Request, format_record


def write_schedule(path: Path, schedule: list[Scheduled], names: list[str], start: float) -> Path:
    with open(path, "w") as file:
        file.write(VERSION_LINE + "\n")
        for r in schedule:
            file.write(format_record(Request(start + r.send_at, names[r.adapter], r.prompt_tokens,
                                             r.output_tokens)) + "\n")
    return path


def write_synthetic(path: Path, batches: int, adapters: int = 100, alpha: float = 1.0, width: int = 4,
                    slots: int = 8, seed: int = 0) -> Path:
    """``batches`` forward batches of a continuously batched, power-law adapter mix."""
    rng = np.random.default_rng(seed)
    weights = (np.arange(adapters) + 1.0) ** -alpha
    picks = iter(rng.choice(adapters, size=batches, p=weights / weights.sum()).tolist())
    lengths = iter(rng.integers(4, 64, size=batches).tolist())
    arrivals = rng.random(batches) < 0.3
    names = [BASE] + [f"adapter-{i:04d}" for i in range(1, adapters)]
    running: dict[int, int] = {}  # adapter -> decode steps left for its longest request
    with open(path, "w") as file:
        file.write(VERSION_LINE + "\n")
        file.write(format_record(Pool(0.0, 0, slots, "lru", 69632)) + "\n")
        file.write(format_record(Batch(0.0, 0, (BASE,), (0,))) + "\n")
        lines = []
        for step in range(batches):
            new: dict[int, int] = {}
            if arrivals[step] or not running:
                adapter = next(picks)
                if adapter in running or len(running) < width:
                    running[adapter] = max(running.get(adapter, 0), next(lengths))
                    new[adapter] = 1
            order = sorted(running)
            lines.append(format_record(Batch(step * 0.02, 0, tuple(names[a] for a in order),
                                             tuple(new.get(a, 0) for a in order))) + "\n")
            for adapter in order:
                running[adapter] -= 1
                if running[adapter] <= 0:
                    del running[adapter]
            if len(lines) >= 10_000:
                file.writelines(lines)
                lines.clear()
        file.writelines(lines)
    return path
