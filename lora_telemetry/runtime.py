"""Per-process telemetry state: configuration, the store, the sinks, and the process's role.

The process that loads the plugin first (SGLang's main process: the HTTP server and the
TokenizerManager, or the user's process that builds an ``sglang.Engine``) creates the run's
state directory and exports it through the environment, so every process SGLang spawns
finds it. Child processes publish snapshots there; the main process renders them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lora_telemetry import config as config_module
from lora_telemetry.sinks.access_log import make_access_log
from lora_telemetry.sinks.logs import LogSink
from lora_telemetry.sinks.prometheus import PrometheusSink
from lora_telemetry.sinks.prometheus.busiest import BusiestAdapters
from lora_telemetry.sinks.prometheus.exposition import Renderer
from lora_telemetry.sinks.prometheus.snapshots import Publisher, pid_alive
from lora_telemetry.sinks.prometheus.store import Store
from lora_telemetry.sinks.traces import HostSpanAnnotator, TraceSink, make_tracer

logger = logging.getLogger("lora_telemetry")
STATE_DIR_ENV = "LORA_TELEMETRY_STATE_DIR"
_STATE_PREFIX = "lora_telemetry-"
BUSIEST_FILE = "busiest.json"  # the main process's busiest adapters, for its schedulers


class Sink(Protocol):
    """Renders events: ``handlers`` maps each event type it cares about to its handler."""

    handlers: dict[type, Callable[[Any], None]]


def _state_base() -> Path:
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir())


def _remove_dead_runs(base: Path) -> None:
    """State directories of servers that exited: their gauges and counters are history."""
    for path in base.glob(_STATE_PREFIX + "*"):
        pid = path.name[len(_STATE_PREFIX):]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _spawned_by_run(state_dir: str | None) -> bool:
    """True if this process is a multiprocessing child of the process that created ``state_dir``
    (SGLang spawns its schedulers and detokenizer so); a process that merely inherited the
    variable, such as a server started from a program that has telemetry itself, is not."""
    import multiprocessing

    if not state_dir or multiprocessing.parent_process() is None:
        return False
    owner = Path(state_dir).name.removeprefix(_STATE_PREFIX)
    if not owner.isdigit() or int(owner) <= 1:
        return False
    pid, hops = os.getpid(), 0
    while pid and pid > 1 and hops < 8:
        pid, hops = _parent(pid), hops + 1
        if pid == int(owner):
            return True
    return False


def _tracer() -> Any:
    """Our tracer, or None where the OTLP exporter cannot be set up (a package of it missing or broken):
    traces are then off, and every other series and log still runs."""
    try:
        return make_tracer()
    except Exception as error:  # an install problem must not take the rest of the telemetry with it
        logger.error("lora_telemetry: traces are off, the OTLP exporter could not be set up: %r", error)
        return None


class Telemetry:
    """One per process. ``emit`` hands an event to every sink, never raising."""

    def __init__(self, cfg: config_module.Config) -> None:
        self.config = cfg
        self.store = Store()
        self.is_main = not _spawned_by_run(os.environ.get(STATE_DIR_ENV))
        self.prometheus = PrometheusSink(self.store, cfg.max_adapter_labels,
                                         BusiestAdapters(cfg.top_adapters, leader=self.is_main))
        self.sinks: list[Sink] = [self.prometheus, LogSink(cfg.log_format, cfg.log_level, cfg.log_file, process_info),
                                  HostSpanAnnotator()]
        if cfg.traces and (tracer := _tracer()) is not None:
            self.sinks.append(TraceSink(tracer))
        if cfg.access_log is not None:
            access_log = make_access_log(cfg.access_log, cfg.access_log_max_bytes, lambda: _ranks.get("dp_rank"))
            if access_log is not None:
                self.sinks.append(access_log)
        self._routes: dict[type, tuple[Callable[[Any], None], ...]] = {}
        self._later_routes: dict[type, tuple[Callable[[Any], None], ...]] = {}
        for sink in self.sinks:
            for routes, handlers in ((self._routes, sink.handlers),
                                     (self._later_routes, getattr(sink, "deferred_handlers", {}))):
                for kind, handler in handlers.items():
                    routes[kind] = (*routes.get(kind, ()), handler)
        if self.is_main:
            base = _state_base()
            _remove_dead_runs(base)
            self.state_dir = base / f"{_STATE_PREFIX}{os.getpid()}"
            self.state_dir.mkdir(parents=True, exist_ok=True)
            os.environ[STATE_DIR_ENV] = str(self.state_dir)
        else:
            self.state_dir = Path(os.environ[STATE_DIR_ENV])
        self.renderer = (Renderer(self.store, self.state_dir, cooperative=True, in_helper=True)
                         if self.is_main else None)
        self._publisher: Publisher | None = None
        self._publisher_lock = threading.Lock()
        self._deferred: deque[Any] = deque()
        self._render_lock = threading.Lock()
        self._runner: threading.Thread | None = None
        self._busiest_seen: Any = None  # the busiest set's version shared (main), or its file's mtime followed
        self.sink_errors = 0

    def emit(self, event: Any) -> None:
        if self._publisher is None and not self.is_main:
            self.start_publisher()
        for handler in self._routes.get(type(event), ()):
            try:
                handler(event)
            except Exception:
                self._sink_failed()
        later = self._later_routes.get(type(event))
        if later:
            self._defer((later, event))

    def defer(self, work: Callable[[], None]) -> None:
        """Run ``work`` (which emits events) off the calling thread, within 0.2 s: for per-request
        work on a hot path that costs more than a hook may spend there; the hot path pays for
        appending a reference. Sinks defer their costlier rendering the same way, by declaring
        ``deferred_handlers``."""
        self._defer((None, work))

    def _defer(self, item: tuple[Any, Any]) -> None:
        if self._publisher is None and self._runner is None:
            self._start_runner()
        self._deferred.append(item)

    def _start_runner(self) -> None:
        """Who runs deferred work: a scheduler's publisher thread, before each snapshot; in the main
        process, which publishes nothing, a thread of its own."""
        if not self.is_main:
            self.start_publisher()
            return
        with self._publisher_lock:
            if self._runner is None:
                self._runner = threading.Thread(target=self._run_deferred_forever, name="lora-telemetry-deferred",
                                                daemon=True)
                self._runner.start()

    def _run_deferred_forever(self) -> None:
        while self._telemetry_current():
            time.sleep(0.2)
            self.render_deferred()

    def _telemetry_current(self) -> bool:
        return _telemetry is self

    def render_deferred(self) -> None:
        """Run what was deferred (on the publisher's thread, or a flush's); one runner at a time.
        Then the busiest adapters' set goes from the main process to the schedulers."""
        self._run_deferred()
        try:
            self._share_busiest() if self.is_main else self._follow_busiest()
            self.prometheus.settle()
        except Exception:  # a thread of ours: it must go on
            self._sink_failed()

    def _share_busiest(self) -> None:
        busiest = self.prometheus.busiest
        if busiest.version == self._busiest_seen:
            return
        self._busiest_seen = busiest.version
        tmp = self.state_dir / f".{BUSIEST_FILE}.tmp"
        tmp.write_text(json.dumps(sorted(busiest.members)))
        os.replace(tmp, self.state_dir / BUSIEST_FILE)

    def _follow_busiest(self) -> None:
        path = self.state_dir / BUSIEST_FILE
        try:
            changed = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if changed != self._busiest_seen:
            self._busiest_seen = changed
            self.prometheus.follow(json.loads(path.read_text()))

    def _run_deferred(self) -> None:
        with self._render_lock:
            while self._deferred:
                handlers, item = self._deferred.popleft()
                try:
                    if handlers is None:
                        item()
                    else:
                        for handler in handlers:
                            handler(item)
                except Exception:
                    self._sink_failed()

    def _sink_failed(self) -> None:
        self.sink_errors += 1
        if self.sink_errors == 1:
            logger.exception("lora_telemetry: a sink failed; further failures are counted only")

    def flush(self) -> None:
        """Publish now (cold paths: a load or unload is visible before SGLang answers it)."""
        if self._publisher is not None:
            self._publisher.publish()

    def start_publisher(self) -> None:
        """Publish snapshots of this process's store from a thread (scheduler processes, and benchmarks
        that measure a hook as a scheduler runs it)."""
        with self._publisher_lock:
            if self._publisher is None:
                self._publisher = Publisher(self.store, self.state_dir, process_labels,
                                            before_publish=self.render_deferred).start()


_ranks: dict[str, int] = {}  # dp_rank, tp_rank, pp_rank of a scheduler process, set by the hooks that read them


def set_ranks(dp_rank: int, tp_rank: int, pp_rank: int = 0) -> None:
    _ranks.update(dp_rank=dp_rank, tp_rank=tp_rank, pp_rank=pp_rank)


def process_info() -> dict[str, Any]:
    """Where a log line comes from: process role, pid, and ranks in a scheduler."""
    main = _telemetry is None or _telemetry.is_main
    return {"process": "tokenizer" if main else "scheduler", "pid": os.getpid(),
            "dp_rank": _ranks.get("dp_rank"), "tp_rank": _ranks.get("tp_rank")}


def process_labels() -> dict[str, str]:
    """Labels of this process's scheduler-side series: its DP replica."""
    return {"dp_rank": str(_ranks.get("dp_rank", 0))}


_telemetry: Telemetry | None = None
_lock = threading.Lock()


def get() -> Telemetry:
    """This process's telemetry, created on first use (after SGLang published its config)."""
    global _telemetry
    if _telemetry is None:
        with _lock:
            if _telemetry is None:
                _telemetry = Telemetry(config_module.get())
    return _telemetry


def emit(event: Any) -> None:
    (_telemetry or get()).emit(event)


def defer(work: Callable[[], None]) -> None:
    (_telemetry or get()).defer(work)


def reset() -> None:
    """Forget this process's telemetry and configuration (benchmarks and tests re-read them)."""
    global _telemetry
    if _telemetry is not None and _telemetry._publisher is not None:
        _telemetry._publisher.stop()
    if _telemetry is not None and _telemetry.is_main:
        os.environ.pop(STATE_DIR_ENV, None)  # processes started from here later are runs of their own
    _telemetry = None
    _ranks.clear()
    config_module.get.cache_clear()

