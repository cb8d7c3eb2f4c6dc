"""Drives a real in-process ``LoRAEngine`` in its own process and writes what it saw as JSON.

SGLang kills the process that created an engine when a scheduler dies, so the tests run this
as a child and assert on its report (``tests/test_engine.py``).
Usage: python -m tests.engine_scenario REPORT TESTBED_DIR METRICS_PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

from lora_telemetry.testbed import engine_kwargs
from lora_telemetry.testbed.model import ALL_PROJECTIONS, AdapterSpec, make_adapter

PROMPT = "select count from the adapter pool"
GREEDY = {"max_new_tokens": 8, "temperature": 0}


def main(report_path: str, root: str, port: str) -> None:
    import os

    os.environ["LORA_TELEMETRY_METRICS_PORT"] = port
    bed = Path(root)
    kwargs = engine_kwargs(bed, max_loras_per_batch=3, log_level="warning")
    broken = Path(report_path).parent / "rank16"
    make_adapter(bed / "model", AdapterSpec("rank16", 16, ALL_PROJECTIONS, seed=9), broken)
    from lora_telemetry import LoRAEngine
    from lora_telemetry.adapters import AdapterNameError
    from lora_telemetry.engine import AdapterLoadError

    adapters = {n: str(bed / "adapters" / n) for n in ("qa", "sql", "chat")}
    adapters["broken"] = str(broken)
    report: dict = {}
    with LoRAEngine(**kwargs, adapters=adapters, adapter_dir=bed / "adapters") as engine:
        sent = {"requests": 0, "loads": 0}
        original_generate, original_load = engine.engine.async_generate, engine.engine.async_load_lora_adapter

        async def counting_generate(*a, **k):
            sent["requests"] += 1
            return await original_generate(*a, **k)

        async def counting_load(*a, **k):
            sent["loads"] += 1
            await asyncio.sleep(0.2)  # hold the load open so that the concurrent callers overlap it
            return await original_load(*a, **k)

        engine.engine.async_generate, engine.engine.async_load_lora_adapter = counting_generate, counting_load

        mixed = engine.generate([PROMPT] * 3, [{**GREEDY, "lora_name": "qa"}, {**GREEDY, "lora_name": "sql"}, GREEDY])
        report["mixed"] = [r["text"] for r in mixed]
        report["direct"] = [engine.engine.generate(PROMPT, GREEDY, lora_path=n)["text"] for n in ("qa", "sql", None)]
        report["loads_after_mixed"] = sent["loads"]

        async def many() -> list:
            return await asyncio.gather(*(engine.async_generate(PROMPT, {**GREEDY, "lora_name": "math"})
                                          for _ in range(16)))

        loads_before = sent["loads"]
        results = engine.engine.loop.run_until_complete(many())
        report["single_flight"] = {"loads": sent["loads"] - loads_before, "answers": len({r["text"] for r in results}),
                                   "results": len(results)}

        partial = engine.generate([PROMPT, PROMPT], [{**GREEDY, "lora_name": "broken"}, {**GREEDY, "lora_name": "qa"}])
        report["partial"] = [type(r).__name__ if isinstance(r, Exception) else r["text"] for r in partial]
        report["partial_error"] = str(partial[0])

        bad = {}
        before = sent["requests"]
        for name in ("ghost", "a/b", "..", "bad\x00name", "", "x" * 129, "__base__"):
            try:
                engine.generate(PROMPT, {**GREEDY, "lora_name": name})
                bad[repr(name)] = "accepted"
            except AdapterNameError as error:
                bad[repr(name)] = str(error)
        report["bad_names"] = bad
        report["bad_names_sent"] = sent["requests"] - before
        try:
            engine.generate([PROMPT, PROMPT], [GREEDY])
            report["length_mismatch"] = "accepted"
        except ValueError as error:
            report["length_mismatch"] = str(error)
        try:
            engine.generate(PROMPT, {**GREEDY, "lora_name": "broken"})
            report["single_broken"] = "accepted"
        except AdapterLoadError as error:
            report["single_broken"] = type(error).__name__

        chunks = list(engine.generate(PROMPT, {**GREEDY, "lora_name": "sql"}, stream=True))
        report["stream"] = {"chunks": len(chunks), "text": chunks[-1]["text"]}
        report["priority"] = engine.generate(PROMPT, {**GREEDY, "lora_name": "chat", "priority": 1})["text"]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            report["metrics"] = response.read().decode()

        # 64 concurrent callers over several adapters while "chat" is unloaded again and again.
        served: dict[str, int] = {}

        async def caller(i: int) -> None:
            name = ("qa", "sql", "chat", "code", None)[i % 5]
            for _ in range(3):
                await engine.async_generate(f"caller {i}", {**GREEDY, "max_new_tokens": 3, "lora_name": name})
                served[name or "__base__"] = served.get(name or "__base__", 0) + 1

        unloads = []

        async def churn() -> None:
            for _ in range(6):
                unloads.append((await engine.engine.async_unload_lora_adapter("chat")).success)
                await asyncio.sleep(0.15)

        async def concurrent() -> None:
            await asyncio.gather(churn(), *(caller(i) for i in range(64)))

        engine.engine.loop.run_until_complete(concurrent())
        import time

        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            report["metrics_after_concurrency"] = response.read().decode()
        report["concurrency_served"] = served
        report["concurrency_unloads"] = sum(unloads)

        # Weights handed over in memory, as an RL trainer pushes each new version.
        from safetensors.torch import load_file

        folder = bed / "adapters" / "fin"
        tensors = load_file(folder / "adapter_model.safetensors")
        config = json.loads((folder / "adapter_config.json").read_text())
        engine.load_adapter_from_tensors("policy_v1", tensors, config)
        report["tensors"] = {"text": engine.generate(PROMPT, {**GREEDY, "lora_name": "policy_v1"})["text"],
                             "from_folder": engine.generate(PROMPT, {**GREEDY, "lora_name": "fin"})["text"]}
        try:
            engine.load_adapter_from_tensors("../policy", tensors, config)
            report["tensors"]["bad_name"] = "accepted"
        except AdapterNameError as error:
            report["tensors"]["bad_name"] = str(error)
        # An RL trainer's loop: version n+1 loaded while version n still serves, n unloaded once done.
        loaded_by_sglang = engine.engine.load_lora_adapter("raw_v0", str(bed / "adapters" / "med"))
        report["sglang_loaded"] = {"success": loaded_by_sglang.success,
                                   "text": engine.generate(PROMPT, {**GREEDY, "lora_name": "raw_v0"})["text"]}
        swap: dict = {"served": {}, "unloaded": []}

        async def hot_swap() -> None:
            rounds = []
            for step in range(4):
                name = f"rl_v{step}"
                await engine.async_load_adapter(name, bed / "adapters" / ("fin" if step % 2 else "med"))
                mixed = [engine.async_generate(f"step {step} {i}", {**GREEDY, "lora_name": name}) for i in range(3)]
                rounds.append(asyncio.gather(*mixed, engine.async_generate(PROMPT, GREEDY)))
                if step:
                    await rounds[step - 1]
                    await engine.async_unload_adapter(f"rl_v{step - 1}")
                    swap["unloaded"].append(f"rl_v{step - 1}")
                swap["served"][name] = 3
            await rounds[-1]

        engine.engine.loop.run_until_complete(hot_swap())
        report["hot_swap"] = swap
        try:
            engine.unload_adapter("rl_v0")
            report["unload_twice"] = "accepted"
        except AdapterNameError as error:
            report["unload_twice"] = str(error)

        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            report["metrics_after_tensors"] = response.read().decode()

        # Awaited on a loop other than the engine's (asyncio.run after blocking calls).
        from lora_telemetry.engine import WrongEventLoopError

        try:
            asyncio.run(engine.async_generate(PROMPT, GREEDY))
            report["other_loop"] = "accepted"
        except WrongEventLoopError as error:
            report["other_loop"] = str(error)

        async def stock_on_another_loop() -> str:
            try:
                await asyncio.wait_for(engine.engine.async_generate(PROMPT, GREEDY), 15)
                return "answered"
            except TimeoutError:
                return "no answer in 15 s"

        report["stock_other_loop"] = asyncio.run(stock_on_another_loop())
    Path(report_path).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
