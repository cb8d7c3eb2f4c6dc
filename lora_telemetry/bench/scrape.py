"""What a scrape costs at adapter scale.

``synthetic``: the series of N adapters that have all served requests, each with every series
the budget allows it (a request finished and one aborted, a reload, a retraction, a drain; latency histograms for the
busiest, see :mod:`lora_telemetry.sinks.prometheus.busiest`), as a real server holds them
(request, token, latency and tokenizer-phase series in the main process; cache, pool,
scheduler-phase and residency series in a scheduler's snapshot file): what a scheduler
pays to publish them, a scrape to render them, and, with the render in its helper process as in a
server, how long an event loop beside the scrape waits at worst and what CPU the scrape costs the
process the loop runs in. ``live``: ``GET /metrics`` on a running server, optionally
first given N adapters that each served a request.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lora_telemetry import events as ev
from lora_telemetry.bench.timing import Timing, summarize
from lora_telemetry.sinks.prometheus import PrometheusSink
from lora_telemetry.sinks.prometheus.exposition import Renderer
from lora_telemetry.sinks.prometheus.snapshots import Publisher
from lora_telemetry.sinks.prometheus.store import Store


def adapter_series(adapters: int) -> tuple[Store, Store]:
    """(main-process store, scheduler store) holding every series ``adapters`` can have."""
    main, scheduler = Store(), Store()
    tokenizer_sink = PrometheusSink(main, adapters + 10)
    scheduler_sink = PrometheusSink(scheduler, adapters + 10)
    for i in range(adapters):
        name = f"tenant-{i:05d}"
        tokenizer_sink.record(ev.RequestAdmitted(name))
        tokenizer_sink.record(ev.CacheLookup(name, "host", True))
        tokenizer_sink.record(ev.CacheLookup(name, "host", False))
        tokenizer_sink.record(ev.RequestFinished(name, "finished", 17, 32, 0.04 + i % 7 / 100, 0.9, resolved=1.0,
                                                 created=0.99, first_chunk=1.05, queued=1.001, prefilled=1.04,
                                                 received=0.985))
        tokenizer_sink.record(ev.RequestFinished(name, "aborted", 17, 3, None, 0.2))
        for event in (ev.CacheLookup(name, "gpu", True), ev.CacheLookup(name, "gpu", False),
                      ev.SlotLoaded(name, i % 8, 0.0004, 2.0, True, 65536),
                      ev.SlotLoaded(name, i % 8, 0.0004, 0.5, True, 65536, "reload"), ev.SlotEvicted(name, i % 8),
                      ev.AdmissionDeferred(name, "slot"), ev.AdmissionWaited(name, 0.01),
                      ev.RequestRequeued(name, "retract"), ev.DrainEnded(name, "tenant-00000", 0.5),
                      ev.RequestPhases(name, "r", False, 1.001, 1.002, 1.012, 1.04, 0.0004),
                      ev.AdapterLoaded(name, "api", True, 0.02), ev.AdapterUnloaded(name, "capacity", 0.001),
                      ev.Residency(name, "host", True, 65536, False),
                      ev.Residency(name, "gpu", i % 100 == 0, 69632, False)):
            scheduler_sink.record(event)
    scheduler_sink.record(ev.RoutingState({f"tenant-{i:05d}": 1 for i in range(min(adapters, 8))},
                                          {f"tenant-{i:05d}": 2 for i in range(8, min(adapters, 40))}, 8, time.time()))
    return main, scheduler


@dataclass
class ScrapeCost:
    render: Timing  # GET /metrics in the main process
    first_render: float  # the first scrape, nothing rendered before
    exposition_bytes: int
    series: int  # samples in the exposition
    publish: Timing  # a scheduler writing its snapshot (a thread of its own, beside the scheduler's loop)
    loop_wait: Timing  # per scrape, the longest an event loop waited while the server's scrape ran beside it
    main_cpu: Timing  # per scrape, the CPU time the server's main process spent on it (the render is the helper's)


def loop_wait(render: Callable[[], bytes], tick_s: float = 0.0005) -> tuple[float, float]:
    """The longest an asyncio loop, ticking every ``tick_s``, came late while ``render`` ran in a
    worker thread, as SGLang's loop does while a scrape renders: what a request waits for. With it,
    the CPU time the worker thread spent."""

    def timed() -> float:
        start = time.thread_time()
        render()
        return time.thread_time() - start

    async def watch() -> tuple[float, float]:
        rendering = asyncio.get_running_loop().run_in_executor(None, timed)
        worst = 0.0
        while not rendering.done():
            start = time.perf_counter()
            await asyncio.sleep(tick_s)
            worst = max(worst, time.perf_counter() - start - tick_s)
        return worst, await rendering

    return asyncio.run(watch())


def synthetic(adapters: int, scrapes: int = 20, churn: float = 0.1) -> ScrapeCost:
    """Between two scrapes, a ``churn`` fraction of the adapters serve another request (their
    request, token, latency, phase and cache series change) and the scheduler publishes a new
    snapshot, so every scrape reads a new snapshot and re-renders what changed."""
    main, scheduler = adapter_series(adapters)
    tokenizer_sink, scheduler_sink = PrometheusSink(main, adapters + 10), PrometheusSink(scheduler, adapters + 10)
    changed = max(1, int(adapters * churn))
    with tempfile.TemporaryDirectory() as directory:
        publisher = Publisher(scheduler, Path(directory), {"dp_rank": "0"}, pid=os.getpid())
        publisher.publish()
        renderer = Renderer(main, Path(directory))
        served = Renderer(main, Path(directory), cooperative=True, in_helper=True)  # as the server's main process
        start = time.perf_counter()
        body = renderer.render()
        first = time.perf_counter() - start
        renders, publishes, waits, cpu = [], [], [], []
        for scrape in range(scrapes):
            for i in range(scrape * changed, (scrape + 1) * changed):
                name = f"tenant-{i % adapters:05d}"
                tokenizer_sink.record(ev.RequestFinished(name, "finished", 11, 20, 0.03 + scrape / 100, 0.5))
                scheduler_sink.record(ev.CacheLookup(name, "gpu", scrape % 2 == 0))
                scheduler_sink.record(ev.RequestPhases(name, "r", True, 1.0, 0.0, 1.01, 1.03, 0.0))
            start = time.perf_counter()
            publisher.publish()
            publishes.append(time.perf_counter() - start)
            start = time.perf_counter()
            body = renderer.render()
            renders.append(time.perf_counter() - start)
            wait, spent = loop_wait(served.render)
            waits.append(wait)
            cpu.append(spent)
        if served.helper is not None:
            served.helper.stop()
    return ScrapeCost(summarize(renders), first, len(body), samples(body), summarize(publishes), summarize(waits),
                      summarize(cpu))


def samples(body: bytes) -> int:
    """Sample lines of a text exposition (not HELP or TYPE)."""
    return body.count(b"\n") - body.count(b"# HELP ") - body.count(b"# TYPE ")


def live(url: str, scrapes: int = 20) -> tuple[Timing, int]:
    samples, size = [], 0
    for _ in range(scrapes):
        start = time.perf_counter()
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=60) as response:
            size = len(response.read())
        samples.append(time.perf_counter() - start)
    return summarize(samples), size


def populate(url: str, adapter_dir: Path, adapters: int, workdir: Path,
             progress: Callable[[int], None] = lambda _n: None) -> list[str]:
    """Give a running server ``adapters`` adapters (copies of the test bed's under new names),
    each of which serves one request, so that every per-adapter series exists."""
    import json

    sources = sorted(p for p in adapter_dir.iterdir() if (p / "adapter_config.json").exists())
    names = [f"tenant-{i:05d}" for i in range(adapters)]

    def one(i: int) -> None:
        folder = workdir / names[i]
        if not folder.exists():
            shutil.copytree(sources[i % len(sources)], folder)
        generate = {"text": "x", "lora_path": names[i], "sampling_params": {"max_new_tokens": 1}}
        for path, body in (("/load_lora_adapter", {"lora_name": names[i], "lora_path": str(folder)}),
                           ("/generate", generate)):
            request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=120).read()
        progress(1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(adapters)))
    return names
