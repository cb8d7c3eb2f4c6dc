"""Open-loop traffic: send each scheduled request at its time, whatever is still in flight.

Requests go to ``/generate`` as streams (prompt as token ids of the scheduled length, output
of the scheduled length with ``ignore_eos``), so the client sees TTFT and end-to-end latency.
The generator reports how late it sent each request against its schedule; the server's
pool and cache figures come from ``/metrics`` deltas over the run.

Where a client's time to first token went is told by SGLang's own wall-clock stamps, which
its stream carries (``request_received_ts``, ``response_sent_to_client_ts``): the client's
wall clock at send and at the first chunk, on the same host, split the client's TTFT into the
time before SGLang saw the request, SGLang's arrival-to-first-chunk, and the time after
(:func:`ttft_breakdown`). SGLang turns its monotonic stamps into wall-clock ones with an offset
taken at its start, so the split between before and after moves if the host's clock is slewed
meanwhile; SGLang's own span and the sum of the other two do not. The client stays lean so that
it adds little of its own: it decodes only the first and last chunk of a stream, and runs on
uvloop where SGLang brought it.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import httpx

from lora_telemetry.bench.workload import Request
from lora_telemetry.scrape import Metrics

T = TypeVar("T")
# The client's clock: uvloop's loop.time() counts whole milliseconds, too coarse for a TTFT.
now = time.perf_counter
VOCAB = (3, 500)  # token ids the test bed's tokenizer knows, specials excluded


@dataclass
class Outcome:
    index: int
    adapter: str
    scheduled: float
    sent: float
    ok: bool = False
    ttft: float | None = None
    e2e: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    rid: str = ""  # SGLang's request id: joins the request with the server's logs and spans
    # wall clock (time.time()): the client's send and first chunk; SGLang's arrival and first chunk handed on
    sent_wall: float = 0.0
    first_wall: float = 0.0
    server_arrival: float = 0.0
    server_first_chunk: float = 0.0


@dataclass
class Run:
    outcomes: list[Outcome]
    duration: float
    before: Metrics | None
    after: Metrics | None
    evictions: list[tuple[float, float]] = field(default_factory=list)  # (seconds, total evictions)

    def send_errors(self) -> list[float]:
        return [o.sent - o.scheduled for o in self.outcomes]


def prompt_ids(request: Request) -> list[int]:
    rng = random.Random(request.index)
    return [rng.randrange(*VOCAB) for _ in range(request.prompt_tokens)]


async def _sleep_until(target: float) -> None:
    """Sleep to within 2 ms of ``target`` (the event loop's timers have millisecond resolution),
    then spin without yielding, so that no other task's work can make the send late."""
    delay = target - now()
    if delay > 0.003:
        await asyncio.sleep(delay - 0.002)
    while now() < target:
        pass


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of a server-sent event stream, split at newlines only. A model's text may hold
    U+2028, U+0085 and other characters that ``str.splitlines`` (and httpx's ``aiter_lines``) take
    for line ends, and SGLang's JSON leaves them unescaped: split there, a chunk is no JSON."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8")


async def _send(client: httpx.AsyncClient, request: Request, name: str | None, outcome: Outcome,
                start: float) -> None:
    body = json.dumps({"input_ids": prompt_ids(request), "lora_path": name, "stream": True, "rid": outcome.rid,
                       "sampling_params": {"max_new_tokens": request.output_tokens, "ignore_eos": True,
                                           "temperature": 0}}).encode()
    last = None
    outcome.sent_wall = time.time() - (now() - start - outcome.sent)
    try:
        async with client.stream("POST", "/generate", content=body,
                                 headers={"Content-Type": "application/json"}) as response:
            if response.status_code != 200:
                outcome.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return
            async for line in sse_lines(response.aiter_bytes()):
                if not line.startswith("data:") or line.startswith("data: [DONE]"):
                    continue
                if outcome.ttft is None:
                    outcome.ttft, outcome.first_wall = now() - start - outcome.sent, time.time()
                    first = json.loads(line[5:])
                    outcome.server_first_chunk = first.get("meta_info", {}).get("response_sent_to_client_ts", 0.0)
                last = line
                if '"error"' in line and "error" in (chunk := json.loads(line[5:])):
                    outcome.error = str(chunk["error"])[:200]
                    return
        outcome.e2e = now() - start - outcome.sent
        meta = json.loads(last[5:]).get("meta_info", {}) if last else {}
        outcome.prompt_tokens = int(meta.get("prompt_tokens", 0))
        outcome.output_tokens = int(meta.get("completion_tokens", 0))
        outcome.server_arrival = float(meta.get("request_received_ts") or 0.0)
        outcome.ok = last is not None
    except (httpx.HTTPError, ValueError) as error:  # ValueError: a chunk that is no JSON fails its request only
        outcome.error = repr(error)[:200]


def _fetch(url: str) -> Metrics | None:
    try:
        return Metrics.fetch(url)
    except OSError:
        return None


def settled(url: str, before: Metrics | None, finished: int, timeout: float = 15.0) -> Metrics | None:
    """``/metrics`` once the server has counted the phases of ``finished`` more requests than in
    ``before``: the scheduler's side in a snapshot (published every 0.2 s, less often when publishing
    costs more), the tokenizer's from its deferred work (every 0.2 s). A fixed wait was once too short
    on a loaded 2-core machine. A server without the plugin answers at once; after ``timeout`` the
    last scrape is returned as it is."""
    deadline = time.monotonic() + timeout
    while True:
        after = _fetch(url)
        if after is None or "sglang_lora_telemetry_info" not in after.types or time.monotonic() > deadline:
            return after
        if all(_phase_count(after, p) - _phase_count(before, p) >= finished for p in ("host_load", "prefill")):
            return after
        time.sleep(0.2)


def _phase_count(metrics: Metrics | None, phase: str) -> float:
    """Requests whose ``phase`` was observed: host_load on the tokenizer side, prefill in a scheduler."""
    return metrics.total("sglang_lora_ttft_phase_seconds_count", phase=phase) if metrics else 0.0


def _evictions_now(url: str) -> float | None:
    """The server's eviction total, read off the exposition's lines without parsing the rest: a
    full parse in the client's process would hold the interpreter lock its requests need."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as response:
            text = response.read()
    except OSError:
        return None
    family = b"sglang_lora_pool_evictions_total"
    return sum(float(line.rsplit(b" ", 1)[1]) for line in text.splitlines()
               if line.startswith(family) and line[len(family):len(family) + 1] in (b"{", b" "))


async def _watch_evictions(url: str, start: float, stop: asyncio.Event, out: list[tuple[float, float]]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        total = await loop.run_in_executor(None, _evictions_now, url)
        if total is not None:
            out.append((now() - start, total))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def drive(url: str, names: list[str | None], requests: list[Request],
                on_progress: Callable[[int, int], None] = lambda sent, done: None, watch: bool = True) -> Run:
    """Send ``requests`` open-loop (``names[r.adapter]`` is the adapter of request ``r``)."""
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, _fetch, url) if watch else None
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    outcomes: list[Outcome] = []
    evictions: list[tuple[float, float]] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as client:
        start = now() + 0.05
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        watcher = asyncio.create_task(_watch_evictions(url, start, stop, evictions)) if watch else None
        tasks = []
        done = 0

        def finished(_task: asyncio.Task) -> None:
            nonlocal done
            done += 1
            on_progress(len(tasks), done)

        for request in requests:
            await _sleep_until(start + request.send_at)
            outcome = Outcome(request.index, names[request.adapter] or "__base__", request.send_at, now() - start,
                              rid=f"{run_id}-{request.index}")
            outcomes.append(outcome)
            task = asyncio.create_task(_send(client, request, names[request.adapter], outcome, start))
            task.add_done_callback(finished)
            tasks.append(task)
            on_progress(len(tasks), done)
        await asyncio.gather(*tasks)
        duration = now() - start
        stop.set()
        if watcher:
            await watcher
    finished = sum(1 for o in outcomes if o.ok)
    after = await loop.run_in_executor(None, settled, url, before, finished) if watch else None
    return Run(outcomes, duration, before, after, evictions)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed (SGLang brings it): the client's own work per
    chunk, which it adds to every TTFT it measures, is about halved."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def ttft_breakdown(outcomes: list[Outcome]) -> dict | None:
    """Sums over the finished requests that carry SGLang's stamps: the client's TTFT, SGLang's own
    arrival-to-first-chunk, and the time before (sending, the server reading and parsing the request)
    and after (the server writing the chunk, the client reading it), on the host's wall clock."""
    timed = [o for o in outcomes if o.ok and o.ttft is not None and o.server_arrival and o.server_first_chunk]
    if not timed:
        return None
    return {"requests": len(timed), "client_s": sum(o.ttft for o in timed),
            "before_sglang_s": sum(o.server_arrival - o.sent_wall for o in timed),
            "in_sglang_s": sum(o.server_first_chunk - o.server_arrival for o in timed),
            "after_sglang_s": sum(o.first_wall - o.server_first_chunk for o in timed)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(run: Run) -> dict:
    """Per-adapter figures from the client and from /metrics deltas, plus the generator's accuracy."""
    adapters: dict[str, dict] = {}
    for name in sorted({o.adapter for o in run.outcomes}):
        mine = [o for o in run.outcomes if o.adapter == name]
        ok = [o for o in mine if o.ok]
        row = {
            "requests": len(mine), "succeeded": len(ok), "failed": len(mine) - len(ok),
            "prompt_tokens": sum(o.prompt_tokens for o in ok), "output_tokens": sum(o.output_tokens for o in ok),
            "tokens_per_s": sum(o.output_tokens for o in ok) / run.duration if run.duration else 0.0,
            "ttft_p50": percentile([o.ttft for o in ok if o.ttft is not None], 0.5),
            "ttft_p95": percentile([o.ttft for o in ok if o.ttft is not None], 0.95),
            "ttft_p99": percentile([o.ttft for o in ok if o.ttft is not None], 0.99),
            "e2e_p95": percentile([o.e2e for o in ok if o.e2e is not None], 0.95),
        }
        if run.before is not None and run.after is not None:
            row.update(_metric_deltas(run.before, run.after, name))
        adapters[name] = row
    errors = run.send_errors()
    return {
        "duration_s": run.duration,
        "requests": len(run.outcomes),
        "succeeded": sum(o.ok for o in run.outcomes),
        "output_tokens_per_s": sum(o.output_tokens for o in run.outcomes if o.ok) / run.duration,
        "send_error_s": {"p50": percentile(errors, 0.5), "p99": percentile(errors, 0.99),
                         "max": max(errors, default=0)},
        "adapters": adapters,
        "evictions_over_time": run.evictions,
        "ttft_breakdown": ttft_breakdown(run.outcomes),
        "ttft_phase_s": phase_sums(run.before, run.after) if run.before and run.after else None,
    }


def phase_sums(before: Metrics, after: Metrics) -> dict[str, float]:
    """Seconds per TTFT phase the server counted over the run, all adapters together."""
    family = "sglang_lora_ttft_phase_seconds_sum"
    phases = {s.labels["phase"] for s in after.select(family)}
    return {p: after.total(family, phase=p) - before.total(family, phase=p) for p in sorted(phases)}


def _metric_deltas(before: Metrics, after: Metrics, name: str) -> dict:
    def delta(family: str, **match: str) -> float:
        return after.total(family, lora_name=name, **match) - before.total(family, lora_name=name, **match)

    gpu_hit, gpu_miss = delta("sglang_lora_cache_lookups_total", tier="gpu", result="hit"), \
        delta("sglang_lora_cache_lookups_total", tier="gpu", result="miss")
    host_hit, host_miss = delta("sglang_lora_cache_lookups_total", tier="host", result="hit"), \
        delta("sglang_lora_cache_lookups_total", tier="host", result="miss")
    return {
        "server_requests": delta("sglang_lora_requests_total", outcome="finished"),
        "server_output_tokens": delta("sglang_lora_generation_tokens_total"),
        "gpu_hit_rate": gpu_hit / (gpu_hit + gpu_miss) if gpu_hit + gpu_miss else None,
        "host_hit_rate": host_hit / (host_hit + host_miss) if host_hit + host_miss else None,
        "slot_loads": delta("sglang_lora_pool_slot_loads_total"),
        "evictions": delta("sglang_lora_pool_evictions_total"),
    }


def to_json(run: Run, workload: object) -> str:
    return json.dumps({"workload": asdict(workload), "summary": summary(run),
                       "requests": [asdict(o) for o in run.outcomes], "written_at": time.time()}, indent=1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
