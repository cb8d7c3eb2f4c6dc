"""Streams requests through an in-process ``LoRAEngine`` and writes the TTFT each caller saw as JSON.

The caller of an in-process engine is a client with no HTTP server in between, so its TTFT is what
the phases should add up to (``tests/test_engine_phases.py``). Run as a child: SGLang kills the process
that created an engine when a scheduler dies.
Usage: python -m tests.phase_scenario REPORT TESTBED_DIR OTLP_URL
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ADAPTERS = ("qa", "sql", "chat", "code", None)  # four adapters and the base model on three slots


def main(report_path: str, root: str, otlp_url: str) -> None:
    os.environ.update({"LORA_TELEMETRY_TRACES": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
                       "OTEL_BSP_SCHEDULE_DELAY": "200", "LORA_TELEMETRY_LOG_FILE": os.devnull})
    from lora_telemetry.testbed import engine_kwargs

    bed = Path(root)
    kwargs = engine_kwargs(bed, max_loras_per_batch=3, log_level="warning", enable_metrics=True)
    from lora_telemetry import LoRAEngine

    ttft: dict[str, float] = {}
    with LoRAEngine(**kwargs, adapters={n: str(bed / "adapters" / n) for n in ADAPTERS if n}) as engine:

        async def one(rid: str, name: str | None) -> None:
            start = time.perf_counter()
            params = {"max_new_tokens": 3, "temperature": 0, "lora_name": name}
            async for _ in await engine.async_generate(f"where did the time go {rid}", params, stream=True, rid=rid):
                ttft.setdefault(rid, time.perf_counter() - start)

        async def client(k: int) -> None:
            for i in range(6):
                await one(f"engine-{k}-{i}", ADAPTERS[(k + i) % len(ADAPTERS)])

        async def clients() -> None:
            await asyncio.gather(*(client(k) for k in range(4)))

        engine.engine.loop.run_until_complete(clients())
        time.sleep(2)  # the span exporters' batches go out
    Path(report_path).write_text(json.dumps(ttft))


if __name__ == "__main__":
    main(*sys.argv[1:])
