"""Drives a ``LoRAEngine`` started with a plan that pins every slot but one (one of them given
unpinned in ``lora_paths`` too), under priorities, through concurrent mixed traffic, and writes
what it saw as JSON (``tests/test_engine_plan.py``).
Usage: python -m tests.plan_scenario REPORT TESTBED_DIR METRICS_PORT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from lora_telemetry.plan import Plan
from lora_telemetry.testbed import engine_kwargs

SLOTS = 3
PLAN = Plan(SLOTS, preload=("qa", "sql", "chat", "ghost"), pin=("qa", "sql"), priorities={"chat": 1})
NAMES = ("qa", "sql", "chat", "code", "math", None)


def main(report_path: str, root: str, port: str) -> None:
    os.environ["LORA_TELEMETRY_METRICS_PORT"] = port
    bed = Path(root)
    from lora_telemetry import LoRAEngine

    report: dict = {}
    # sql, which the plan pins, is loaded unpinned at start first: the plan loads it again pinned.
    kwargs = engine_kwargs(bed, max_loras_per_batch=SLOTS, log_level="warning",
                           lora_paths=[f"sql={bed / 'adapters' / 'sql'}"])
    with LoRAEngine(**kwargs, adapter_dir=bed / "adapters", plan=PLAN, priorities={"code": 2}) as engine:
        report["preloaded"] = {"loaded": engine.preloaded.loaded, "missing": engine.preloaded.missing,
                               "repinned": engine.preloaded.repinned}
        report["environment_restored"] = "LORA_TELEMETRY_PRIORITIES" not in os.environ
        finished: dict[str, int] = {}

        async def caller(i: int) -> None:
            name = NAMES[i % len(NAMES)]
            for round_ in range(3):
                params = {"max_new_tokens": 2 + (i + round_) % 7, "temperature": 0, "lora_name": name}
                if i % 4 == 0:
                    params["priority"] = i  # a request's own priority lifts its adapter while it waits
                await engine.async_generate(f"caller {i} round {round_}", params)
                finished[name or "__base__"] = finished.get(name or "__base__", 0) + 1

        async def everyone() -> None:
            await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(24))), timeout=300)

        start = time.monotonic()
        engine.engine.loop.run_until_complete(everyone())
        report["seconds"] = time.monotonic() - start
        report["finished"] = finished
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            report["metrics"] = response.read().decode()
    Path(report_path).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4])
