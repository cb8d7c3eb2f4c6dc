"""Prometheus sink: turns events into series of :mod:`.families` in a :class:`.Store`."""

from __future__ import annotations

from lora_telemetry import events as ev
from lora_telemetry.sinks.prometheus.busiest import BusiestAdapters
from lora_telemetry.sinks.prometheus.families import BUSIEST
from lora_telemetry.sinks.prometheus.store import Store

_RESERVED = {ev.BASE, ev.UNKNOWN, ev.OTHER}
IN_FLIGHT = "sglang_lora_requests_in_flight"  # counted up and down, on one thread
# Set whole at each scheduler flush: a dropped adapter's value is not carried into __other__
ROUTING_GAUGES = frozenset({"sglang_lora_requests_running", "sglang_lora_requests_waiting"})


class LabelGuard:
    """Keeps the ``lora_name`` label bounded: past ``cap`` distinct names, ``__other__``."""

    def __init__(self, store: Store, cap: int) -> None:
        self.store = store
        self.cap = cap
        self.seen: set[str] = set()

    def known(self, name: str) -> str:
        return name if name in self.seen or name in _RESERVED else ev.OTHER

    def __call__(self, name: str, count_overflow: bool = False) -> str:
        if name in self.seen:
            return name
        if name in _RESERVED:
            return name
        if len(self.seen) < self.cap:
            self.seen.add(name)
            return name
        if count_overflow:
            self.store.inc("sglang_lora_telemetry_label_overflow_total")
        return ev.OTHER


class PrometheusSink:
    """Renders events as metric updates; knows nothing about SGLang."""

    def __init__(self, store: Store, max_adapter_labels: int, busiest: BusiestAdapters | None = None) -> None:
        self.store = store
        self.label = LabelGuard(store, max_adapter_labels)
        self.seen = self.label.seen
        self.busiest = busiest or BusiestAdapters(50)
        self.handlers = {
            ev.RequestAdmitted: self._admitted,
            ev.RequestFinished: self._finished,
            ev.RequestRejected: self._rejected,
            ev.CacheLookup: self._lookup,
            ev.SlotLoaded: self._slot_loaded,
            ev.SlotCopied: self._slot_copied,
            ev.SlotEvicted: self._evicted,
            ev.PoolState: self._pool_state,
            ev.BatchComposition: self._batch,
            ev.AdmissionDeferred: self._deferred,
            ev.AdmissionWaited: self._waited,
            ev.RequestRequeued: self._requeued,
            ev.PoolOverflow: self._overflow,
            ev.DrainEnded: self._drained,
            ev.AdapterLoaded: self._loaded,
            ev.AdapterUnloaded: self._unloaded,
            ev.Residency: self._residency,
            ev.RoutingState: self._routing,
            ev.HookFailed: self._hook_failed,
            ev.TelemetryStarted: self._started,
            ev.ServingRole: self._role,
        }
        # Rendered within 0.2 s off the thread that emitted them (a request's several phase
        # observations would cost its hot path more than the rest of its series)
        self.deferred_handlers = {ev.RequestFinished: self._finished_phases, ev.RequestPhases: self._phases}
        self._lookup_series: set[tuple[str, str, str]] = set()
        self._running: set[str] = set()
        self._waiting: set[str] = set()
        self._host_loaded: set[str] = set()
        self._versions = ("", "")
        self._sweeps = 0  # sweeps left after the busiest set changed (see settle)

    def record(self, event: object) -> None:
        """Render one event now, deferred handlers included (the runtime calls the handlers itself)."""
        for handlers in (self.handlers, self.deferred_handlers):
            if type(event) in handlers:
                handlers[type(event)](event)

    def _top(self, name: str) -> str:
        """The label of ``name`` in a family kept for the busiest adapters."""
        return self.busiest.label(self.label(name))

    def _known_top(self, name: str) -> str:
        """For deferred handlers: reads the label guard and the busiest set, never adds to them (the
        request's other series let its name in or folded it already)."""
        name = self.label.known(name)
        return name if name in self.busiest.members or name == ev.OTHER else ev.OTHER

    def _served(self, name: str) -> None:
        """One request seen: once a period the busiest set is re-ranked."""
        if self.busiest.served(name):
            self._drop_quiet()

    def follow(self, names: list[str]) -> None:
        """Take the leading process's busiest set (a scheduler, on its publishing thread)."""
        if self.busiest.follow(names):
            self._drop_quiet()

    def _drop_quiet(self) -> None:
        """The series of adapters no longer among the busiest go, their counts and observations
        (and the in-flight gauge, counted up and down) carried into ``__other__``, so sums over
        ``lora_name`` lose nothing. Another thread may have named one of them a moment before and
        write its series again: :meth:`settle` sweeps once more."""
        keep = self.busiest.members | {ev.OTHER, ev.UNKNOWN}
        for family in BUSIEST:
            self.store.keep_only(family, keep, None if family in ROUTING_GAUGES else ev.OTHER)
        self._sweeps = 2

    def settle(self) -> None:
        """Called by the runtime on the thread that runs deferred work, after running it: sweeps
        the series a racing writer put back after a drop (the in-flight gauge has one writer)."""
        if self._sweeps:
            self._sweeps -= 1
            keep = self.busiest.members | {ev.OTHER, ev.UNKNOWN}
            for family in BUSIEST:
                if family != IN_FLIGHT:
                    self.store.keep_only(family, keep, None if family in ROUTING_GAUGES else ev.OTHER)

    def _admitted(self, e: ev.RequestAdmitted) -> None:
        self.store.inc("sglang_lora_requests_in_flight", (self.busiest.label(self.label(e.lora_name, True)),))

    def _finished(self, e: ev.RequestFinished) -> None:
        name = self.label(e.lora_name)
        top = self.busiest.label(name)
        s = self.store
        s.inc("sglang_lora_requests_in_flight", (top,), -1)
        s.inc("sglang_lora_requests_total", (name, e.outcome))
        s.inc("sglang_lora_prompt_tokens_total", (name,), e.prompt_tokens)
        s.inc("sglang_lora_generation_tokens_total", (name,), e.generation_tokens)
        if e.outcome == "finished":  # latency of a request cut short says nothing about serving it
            if e.ttft_s is not None:
                s.observe("sglang_lora_time_to_first_token_seconds", (top,), e.ttft_s)
            if e.e2e_s is not None:
                s.observe("sglang_lora_e2e_request_latency_seconds", (top,), e.e2e_s)
        self._served(name)

    def _finished_phases(self, e: ev.RequestFinished) -> None:
        """Deferred (see ``deferred_handlers``)."""
        if e.outcome == "finished":
            name = self._known_top(e.lora_name)
            for phase, seconds in e.phases().items():
                self.store.observe("sglang_lora_ttft_phase_seconds", (name, phase), seconds)

    def _phases(self, e: ev.RequestPhases) -> None:
        """Deferred, like :meth:`_finished_phases` (the request's gpu lookup let its name in)."""
        name = self._known_top(e.lora_name)
        for phase, seconds in e.phases().items():
            self.store.observe("sglang_lora_ttft_phase_seconds", (name, phase), seconds)

    def _rejected(self, e: ev.RequestRejected) -> None:
        self.store.inc("sglang_lora_requests_total", (ev.UNKNOWN, "rejected"))

    def _lookup(self, e: ev.CacheLookup) -> None:
        name = e.lora_name
        if name not in self.seen:
            name = self.label(name)
        key = (name, e.tier, "hit" if e.hit else "miss")
        if key not in self._lookup_series:
            # Hits and misses start together at 0, so that PromQL ratios of the two see the
            # same samples from the same moment.
            self._lookup_series.update({(name, e.tier, "hit"), (name, e.tier, "miss")})
            self.store.ensure("sglang_lora_cache_lookups_total", (name, e.tier, "hit"))
            self.store.ensure("sglang_lora_cache_lookups_total", (name, e.tier, "miss"))
        self.store.inc("sglang_lora_cache_lookups_total", key)
        if e.tier == "gpu":  # a scheduler's count of requests, for its busiest set
            self.busiest.label(name)
            self._served(name)

    def _slot_loaded(self, e: ev.SlotLoaded) -> None:
        name = self.label(e.lora_name)
        top = self.busiest.label(name)
        self.store.inc("sglang_lora_pool_slot_loads_total", (name,))
        if e.cause == "reload":
            self.store.inc("sglang_lora_pool_slot_reloads_total", (top,))
        self.store.inc("sglang_lora_pool_slot_load_bytes_total", (top,), e.bytes)
        if e.seconds is not None:
            self.store.observe("sglang_lora_pool_slot_load_seconds", (), e.seconds)
        if e.since_eviction_s is not None:
            self.store.observe("sglang_lora_pool_reuse_seconds", (top,), e.since_eviction_s)
            if e.thrash:
                self.store.inc("sglang_lora_pool_thrash_reloads_total", (name,))

    def _slot_copied(self, e: ev.SlotCopied) -> None:
        self.store.observe("sglang_lora_pool_slot_load_seconds", (), e.seconds)

    def _evicted(self, e: ev.SlotEvicted) -> None:
        name = e.lora_name
        self.store.inc("sglang_lora_pool_evictions_total", (name if name in self.seen else self.label(name),))

    def _pool_state(self, e: ev.PoolState) -> None:
        self.store.set("sglang_lora_pool_capacity_bytes", (), e.capacity_bytes)
        if e.memory_only:
            return
        self.store.set("sglang_lora_pool_slots", ("used",), e.used)
        self.store.set("sglang_lora_pool_slots", ("free",), e.free)
        self.store.set("sglang_lora_pool_slots", ("pinned",), e.pinned)

    def _batch(self, e: ev.BatchComposition) -> None:
        for distinct, batches in e.batches.items():
            self.store.observe("sglang_lora_batch_adapters", (), distinct, batches)

    def _deferred(self, e: ev.AdmissionDeferred) -> None:
        self.store.inc("sglang_lora_admission_deferrals_total", (self._top(e.lora_name), e.reason))

    def _waited(self, e: ev.AdmissionWaited) -> None:
        self.store.observe("sglang_lora_admission_wait_seconds", (self._top(e.lora_name),), e.seconds)

    def _requeued(self, e: ev.RequestRequeued) -> None:
        self.store.inc("sglang_lora_requests_requeued_total", (self._top(e.lora_name), e.reason))

    def _drained(self, e: ev.DrainEnded) -> None:
        self.store.observe("sglang_lora_drain_seconds", (self._top(e.lora_name),), e.seconds)

    def _overflow(self, e: ev.PoolOverflow) -> None:
        self.store.inc("sglang_lora_pool_union_overflows_total", ())

    def _loaded(self, e: ev.AdapterLoaded) -> None:
        name = self._top(e.lora_name)
        result = "success" if e.success else "failure"
        self.store.inc("sglang_lora_adapter_loads_total", (name, e.trigger, result))
        self.store.observe("sglang_lora_adapter_load_seconds", (e.trigger,), e.seconds)

    def _unloaded(self, e: ev.AdapterUnloaded) -> None:
        self.store.inc("sglang_lora_adapter_unloads_total", (self._top(e.lora_name), e.reason))

    def _residency(self, e: ev.Residency) -> None:
        name = self.label(e.lora_name)
        s = self.store
        s.set("sglang_lora_adapter_memory_bytes", (name, e.tier), e.bytes if e.resident else 0)
        if e.memory_only:
            return
        pinned = "true" if e.pinned else "false"
        s.set("sglang_lora_adapter_resident", (name, e.tier, pinned), 1 if e.resident else 0)
        if e.tier == "host":
            (self._host_loaded.add if e.resident else self._host_loaded.discard)(e.lora_name)
            s.set("sglang_lora_adapters_loaded", (), len(self._host_loaded))
            if e.resident:  # its gpu-tier lookups exist from the moment it can be asked for
                for result in ("hit", "miss"):
                    self._lookup_series.add((name, "gpu", result))
                    s.ensure("sglang_lora_cache_lookups_total", (name, "gpu", result))

    def _routing(self, e: ev.RoutingState) -> None:
        s = self.store
        for family, now, before in (
            ("sglang_lora_requests_running", e.running, self._running),
            ("sglang_lora_requests_waiting", e.waiting, self._waiting),
        ):
            counts: dict[str, int] = {}
            for name, count in now.items():  # names past the label cap or the busiest add up in __other__
                label = self._top(name)
                counts[label] = counts.get(label, 0) + count
            for gone in before - counts.keys():
                if gone == ev.OTHER or gone in self.busiest.members:  # the others' series are gone
                    s.set(family, (gone,), 0)
            for label, count in counts.items():
                s.set(family, (label,), count)
            before.clear()
            before.update(counts)
        info = "sglang_lora_requests_info"
        labels = (",".join(sorted(e.running)), ",".join(sorted(e.waiting)), str(e.max_lora))
        s.replace(info, labels, e.timestamp)

    def _role(self, e: ev.ServingRole) -> None:
        self.store.replace("sglang_lora_telemetry_info", (*self._versions, e.role), 1)

    def _hook_failed(self, e: ev.HookFailed) -> None:
        self.store.inc("sglang_lora_telemetry_errors_total", (e.hook,))

    def _started(self, e: ev.TelemetryStarted) -> None:
        self._versions = (e.version, e.sglang_version)
        self.store.replace("sglang_lora_telemetry_info", (*self._versions, "null"), 1)
        self.store.ensure("sglang_lora_telemetry_label_overflow_total", ())
        for hook, active in e.hooks_active.items():
            self.store.set("sglang_lora_telemetry_hooks_active", (hook,), 1 if active else 0)
            self.store.ensure("sglang_lora_telemetry_errors_total", (hook,))
