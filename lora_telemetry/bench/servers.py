"""Servers that the comparing benches (``--compare-overhead``, ``--plan-effect``) start themselves:
the test bed's, or any model's (``--model`` with ``--adapter-dir``).

Each setting gets a fresh server per run, or, with ``--side-by-side``, one server per setting kept
up for every round, both on one GPU. A GPU server takes 75-110 s to start (CUDA graphs, Triton),
so fresh servers make a few pairs cost more in starts than in traffic; side by side, the idle
server only holds memory: SGLang's scheduler launches no kernel while it has no request, and with
``--sleep-on-idle`` (given to both) it waits on its socket instead of polling it in a loop, which
took a host core from the measured server (half of this 2-core machine). SGLang
sizes a server's memory from what the device has free when it starts, so the second server needs a
larger ``--mem-fraction-static`` than the first; a ``--max-total-tokens`` in ``--server-flags``
gives both the same KV cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
from collections.abc import Iterator
from pathlib import Path


def adapters_in(folder: Path) -> dict[str, Path]:
    """Adapter folders (holding an ``adapter_config.json``) in ``folder``, by name."""
    if not folder.is_dir():
        raise ValueError(f"--adapter-dir {folder} is not a directory")
    found = {p.name: p for p in sorted(folder.iterdir()) if (p / "adapter_config.json").is_file()}
    if not found:
        raise ValueError(f"--adapter-dir {folder} holds no adapter folder (one with an adapter_config.json)")
    return found


def chosen_adapters(args: argparse.Namespace, count: int) -> list[str]:
    """The first ``count`` adapters of ``--adapter-dir``, or of the test bed without ``--model``."""
    if (args.model is None) != (args.adapter_dir is None):
        raise ValueError("--model and --adapter-dir go together")
    if args.model is None:
        from lora_telemetry.testbed.model import adapter_name

        return [adapter_name(i) for i in range(count)]
    available = list(adapters_in(args.adapter_dir))
    if len(available) < count:
        raise ValueError(f"--adapter-dir holds {len(available)} adapters; --adapters asks for {count}")
    return available[:count]


def side_by_side(text: str | None) -> tuple[float, float] | None:
    """``--side-by-side F1,F2``: the ``--mem-fraction-static`` of the first and the second server."""
    if text is None:
        return None
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--side-by-side wants two fractions, the first server's and the second's "
                         f"(e.g. 0.35,0.8), not {text!r}") from None
    if not (0 < first < 1 and 0 < second < 1):
        raise ValueError(f"--side-by-side fractions lie between 0 and 1, not {text!r}")
    return first, second


def _model_flags(args: argparse.Namespace, names: list[str], plan: Path | None) -> list[str]:
    """Adapters given by ``--lora-paths``; with a plan, the plugin loads them, and SGLang, which sizes
    its pool from the adapters it starts with, is told their largest rank and the modules they adapt,
    so that both servers have the same slots."""
    adapters = adapters_in(args.adapter_dir)
    if plan:
        configs = [json.loads((adapters[n] / "adapter_config.json").read_text()) for n in names]
        targets = [c.get("target_modules") for c in configs]
        modules = sorted({m for t in targets for m in t}) if all(isinstance(t, list) for t in targets) else ["all"]
        loaded = ["--max-lora-rank", str(max(c["r"] for c in configs)), "--lora-target-modules", *modules]
    else:
        loaded = ["--lora-paths", *(f"{n}={adapters[n]}" for n in names)]
    return ["--model-path", str(args.model), "--enable-lora", "--enable-metrics",
            "--max-loras-per-batch", str(args.slots), *loaded]


@contextlib.contextmanager
def started(args: argparse.Namespace, names: list[str], env: dict[str, str], log: Path,
            plan: Path | None = None, fraction: float | None = None) -> Iterator[str]:
    """A server of ``names`` (all in host memory before traffic) with ``args.slots`` slots, until the
    block ends; with a ``plan``, the plugin loads, pins and raises what the plan says instead.
    ``--server-flags`` come last, then, for a server kept side by side, ``fraction`` as
    ``--mem-fraction-static`` and ``--sleep-on-idle``."""
    from lora_telemetry.bench.command import embedded_server
    from lora_telemetry.testbed.server import SGLangServer

    kept = ["--mem-fraction-static", str(fraction), "--sleep-on-idle"] if fraction else []
    extra = [*shlex.split(args.server_flags or ""), *kept]
    if args.model is None:
        with embedded_server(len(names), args.slots, env=env, plan=plan, extra_flags=extra, log_path=log) as (url, _):
            yield url
        return
    if plan is not None:
        env = {**env, "LORA_TELEMETRY_PLAN": str(plan), "LORA_TELEMETRY_ADAPTER_DIR": str(args.adapter_dir)}
    server = SGLangServer([*_model_flags(args, names, plan), *extra], log, env=env)
    server.start(timeout=args.start_timeout)
    try:
        server.wait_healthy(args.start_timeout)
        yield server.url
    finally:
        server.stop(timeout=60)
