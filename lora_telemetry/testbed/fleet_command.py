"""``lora-telemetry testbed fleet DIR``: a fleet of test-bed servers behind SMG, until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from lora_telemetry import testbed
from lora_telemetry.testbed.fleet import Fleet


def adapter_flags(bed: testbed.TestBed, slots: int) -> list[str]:
    """Every adapter of the bed on every replica, and the pool size."""
    return ["--max-loras-per-batch", str(slots), "--lora-paths",
            *(f"{name}={path}" for name, path in bed.adapters().items())]


def instructions(fleet: Fleet) -> str:
    logs = " ".join(str(p) for p in fleet.access_logs)
    return "\n".join([
        f"gateway: {fleet.url}  (send /generate with lora_path, or /v1/completions with lora_path)",
        *(f"replica {i}: {s.url}/metrics" for i, s in enumerate(fleet.servers)),
        "Prometheus scrape job for every replica (add it to scrape_configs):",
        "  " + json.dumps(fleet.scrape_config()),
        f"when traffic has run: lora-telemetry advise {logs}",
        "Ctrl-C stops the fleet",
    ])


@contextmanager
def started(fleet: Fleet, console: Console) -> Iterator[Fleet]:
    """The fleet started, with progress shown; stopped on leaving, Ctrl-C included."""
    try:
        with console.status(f"starting {len(fleet.servers)} SGLang servers on the CPU (about 20 s each) "
                            "and the gateway"):
            fleet.start(on_started=lambda what: console.print(f"started {what}"))
        yield fleet
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping the fleet"):
            fleet.stop()


def serve_until_interrupted(fleet: Fleet, console: Console) -> None:
    console.print(instructions(fleet), markup=False, highlight=False)
    signal.pause()


def run(args: argparse.Namespace, extra: list[str], console: Console) -> int:
    with console.status("making the test bed (once; cached)") as status:
        bed = testbed.make(args.dir, adapters=args.adapters, seed=0, progress=lambda m: status.update(f"making {m}"))
    fleet = Fleet(args.dir, args.replicas, adapter_flags(bed, args.slots) + extra, args.dir / "fleet", args.policy)
    with started(fleet, console):
        serve_until_interrupted(fleet, console)
    return 0
