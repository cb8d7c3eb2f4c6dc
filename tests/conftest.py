"""Shared fixtures: one CPU test bed per session, real SGLang servers per module.

Servers run as their own process group (a dying scheduler takes its parent with it, so
never inside the pytest process) and are stopped at the end of the module that started
them, also when a test fails, so only one runs at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lora_telemetry.capacity.recording import Copy, Record, Request, read
from lora_telemetry.scrape import Metrics
from lora_telemetry.sinks.access_log import BoundedAppender
from lora_telemetry.testbed import TestBed, make
from lora_telemetry.testbed.server import TestBedServer

PROBE_DIR = Path(__file__).parent / "probe"


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory) -> TestBed:
    return make(tmp_path_factory.mktemp("testbed"), adapters=8)


def adapters_with_a_planted_one(bed: TestBed, tmp: Path) -> Path:
    """A copy of the test bed's adapters in ``tmp/adapters``, an adapter planted outside it at
    ``tmp/planted``, and a symlink ``escape`` inside that points at the planted one."""
    inside = tmp / "adapters"
    shutil.copytree(bed.adapter_dir, inside)
    shutil.copytree(bed.adapter_dir / "qa", tmp / "planted")
    os.symlink(tmp / "planted", inside / "escape")
    return inside


def lora_paths(bed: TestBed, names: list[str]) -> list[str]:
    adapters = bed.adapters()
    return ["--lora-paths", *(f"{n}={adapters[n]}" for n in names)]


@contextmanager
def running_server(bed: TestBed, flags: list[str], env: dict[str, str] | None = None,
                   probe: bool = False, tmp: Path | None = None, warmup: bool = False) -> Iterator[TestBedServer]:
    """A test-bed server; with ``probe`` it also loads the SGLang state probe plugin."""
    env = dict(env or {})
    if probe:
        assert tmp is not None
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE_DIR), os.environ.get("PYTHONPATH", "")]))
        env["SGLANG_STATE_PROBE_FILE"] = str(tmp / "sglang-state.json")
    log = (tmp or bed.root) / f"server-{time.monotonic_ns()}.log"
    server = TestBedServer(bed.root, flags, env=env, log_path=log, warmup=warmup)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Errors of SGLang's own that a test's traffic may provoke, with the plugin switched off as well:
# a request naming an adapter that is not loaded makes SGLang 0.5.23 release a lora_id of None.
KNOWN_SGLANG_ERRORS = ("TypeError: lora_id must be either a string or a list of strings",)


# Warnings SGLang logs with the traceback of an error it handled: with the warm-up skipped, its
# post-warm-up request to itself (/freeze_gc) can race uvicorn's start and be refused.
HANDLED_BY_SGLANG = ("post-warmup freeze_gc failed",)


def _without_handled(log: str) -> str:
    """The log without SGLang's handled warnings and the tracebacks that follow them."""
    records = re.split(r"^(?=\[\d{4}-\d\d-\d\d [\d:]+\] )", log, flags=re.M)
    return "".join(r for r in records if not any(warning in r.split("\n", 1)[0] for warning in HANDLED_BY_SGLANG))


def unexpected_errors(log: str) -> list[str]:
    """Tracebacks in a server log that are ours (raised in lora_telemetry's code), or SGLang's
    and not among the known ones; and our hooks' own failure messages."""
    found = [line for line in log.splitlines() if "lora_telemetry hook" in line]
    for block in re.split(r"^(?=Traceback \(most recent call last\):)", _without_handled(log), flags=re.M)[1:]:
        lines = block.splitlines()
        frames = [line for line in lines if line.lstrip().startswith('File "')]
        error = next((line for line in lines[1:] if line and not line.startswith((" ", "Traceback"))), "")
        ours = bool(frames) and "lora_telemetry" in frames[-1]
        if ours or not error.startswith(KNOWN_SGLANG_ERRORS):
            found.append("\n".join(lines[:40]))
    return found


def interruptible() -> None:
    """``preexec_fn`` of a child that the test stops with SIGINT, as Ctrl-C does: a shell starts its
    background jobs with SIGINT ignored, children inherit that, and Python then never raises
    KeyboardInterrupt (the suite run as ``./dev.sh test &`` would fail)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def post(server: TestBedServer, path: str, body: dict[str, Any], timeout: float = 120) -> tuple[int, Any]:
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json_or_text(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _json_or_text(error.read())


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def generate(server: TestBedServer, adapter: str | None, text: str = "the adapter pool", tokens: int = 4) -> dict:
    status, body = post(server, "/generate", {
        "text": text, "lora_path": adapter, "sampling_params": {"max_new_tokens": tokens, "temperature": 0}})
    assert status == 200, body
    return body


def _counts(metrics: Metrics) -> list[tuple]:
    return [(s.name, sorted(s.labels.items()), s.value) for s in metrics.samples
            if s.name.startswith("sglang_lora_") and s.name.endswith(("_total", "_count"))]


def metrics_when(server: TestBedServer, check: Any, timeout: float = 5.0) -> Metrics:
    """Scrape until ``check(metrics)`` holds and our counts have settled.

    Scheduler processes publish every 0.2 s, so the scrape in which one count reached its value
    can still miss another count of the same moment: a scrape counts once two of them, a
    publishing interval apart, agree.
    """
    deadline = time.monotonic() + timeout
    while True:
        metrics = Metrics.fetch(server.url)
        try:
            if check(metrics):
                time.sleep(0.3)
                again = Metrics.fetch(server.url)
                if (_counts(again) == _counts(metrics) and check(again)) or time.monotonic() > deadline:
                    return again
                continue
        except (KeyError, AssertionError):
            pass
        if time.monotonic() > deadline:
            return metrics
        time.sleep(0.1)


def recording_complete(records: list[Record], metrics: Metrics) -> bool:
    """The access log holds every finished request and every slot load that ``metrics`` counted (each
    copy is timed in a C record, the base model's too)."""
    return (sum(isinstance(r, Request) for r in records) == metrics.total("sglang_lora_requests_total",
                                                                          outcome="finished")
            and sum(isinstance(r, Copy) for r in records) == metrics.total("sglang_lora_pool_slot_loads_total"))


def access_log_when(path: Path, check: Callable[[list[Record]], bool], timeout: float = 15.0) -> list[Record]:
    """The access log's records once ``check`` holds of them and the file has not grown for three
    of its appending periods; an AssertionError if that is not so by ``timeout``.

    Each process appends its records from a thread every 0.2 s, later when the host is busy: a
    fixed wait after the traffic was enough on an idle machine only."""
    deadline, size, steady_since = time.monotonic() + timeout, -1, time.monotonic()
    while True:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, steady_since = now_size, time.monotonic()
        elif time.monotonic() - steady_since >= 3 * BoundedAppender.FLUSH_S:
            records = list(read(path))
            if check(records):
                return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not hold what was expected within {timeout:.0f} s")
        time.sleep(0.1)
