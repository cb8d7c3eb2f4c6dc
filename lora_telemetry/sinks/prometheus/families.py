"""Every metric family we export: name, type, labels, HELP. This is the contract.

Families with ``busiest=True`` keep a ``lora_name`` of its own only for the K busiest adapters
(``LORA_TELEMETRY_TOP_ADAPTERS``, see :mod:`.busiest`); the others' samples are under
``__other__``. Every other family with ``lora_name`` is the per-adapter budget: at most
``SERIES_PER_ADAPTER`` series for any adapter.

Scheduler-side samples additionally carry ``dp_rank`` (one series per DP replica, never
one per TP rank). ``merge`` says how samples of the same series from several processes
combine: counters and histograms always add up; gauges add up over live processes
(``sum``), or take the largest (``max``).
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SLOT_LOAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
ADAPTER_LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Eight phases per adapter: a coarse ladder keeps 1,000 adapters' phases at 88,000 lines of /metrics
# rather than 152,000 (means, what the dashboard and `top` show, are exact at any bucket count).
PHASE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0)
REUSE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
BATCH_ADAPTER_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0)
# Requests by outcome (finished, aborted), 2 token counters, 4 lookups (tier x result), slot loads,
# evictions, thrash reloads, memory and residency in 2 tiers, per scheduler (dp_rank) where it counts
SERIES_PER_ADAPTER = 15


@dataclass(frozen=True)
class Family:
    name: str
    type: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    merge: str = "sum"
    busiest: bool = False  # lora_name only for the K busiest adapters, else __other__


def _counter(name: str, labels: tuple[str, ...], help: str, busiest: bool = False) -> Family:
    return Family(name, "counter", labels, help, busiest=busiest)


def _gauge(name: str, labels: tuple[str, ...], help: str, merge: str = "sum", busiest: bool = False) -> Family:
    return Family(name, "gauge", labels, help, merge=merge, busiest=busiest)


def _histogram(name: str, labels: tuple[str, ...], help: str, buckets: tuple[float, ...],
               busiest: bool = True) -> Family:
    return Family(name, "histogram", labels, help, buckets, busiest=busiest and "lora_name" in labels)


FAMILIES: tuple[Family, ...] = (
    # Request path (tokenizer process)
    _counter("sglang_lora_requests_total", ("lora_name", "outcome"),
             "Requests that ended, by adapter and outcome (finished, aborted, rejected)."),
    _counter("sglang_lora_prompt_tokens_total", ("lora_name",), "Prompt tokens of finished requests."),
    _counter("sglang_lora_generation_tokens_total", ("lora_name",), "Generated tokens."),
    _histogram("sglang_lora_time_to_first_token_seconds", ("lora_name",),
               "Time from arrival to the first output token.", LATENCY_BUCKETS),
    _histogram("sglang_lora_e2e_request_latency_seconds", ("lora_name",),
               "Time from arrival to the end of the request.", LATENCY_BUCKETS),
    _gauge("sglang_lora_requests_in_flight", ("lora_name",), "Requests admitted and not yet finished.",
           busiest=True),
    _histogram("sglang_lora_ttft_phase_seconds", ("lora_name", "phase"),
               "Where time to first token went: phase = http, host_load, dispatch, queue, admission, slot_load, "
               "prefill, output.",
               PHASE_BUCKETS),
    # Two-tier adapter cache
    _counter("sglang_lora_cache_lookups_total", ("lora_name", "tier", "result"),
             "Adapter lookups. tier=host: at arrival, hit if the adapter was loaded. "
             "tier=gpu: when a request is first scheduled, hit if its adapter held a pool slot."),
    _counter("sglang_lora_pool_slot_loads_total", ("lora_name",), "Copies of an adapter into a pool slot."),
    _counter("sglang_lora_pool_slot_reloads_total", ("lora_name",),
             "Slot loads for a decode step of running requests whose adapter was evicted under them (the "
             "rest are for requests being admitted).", busiest=True),
    _counter("sglang_lora_pool_slot_load_bytes_total", ("lora_name",),
             "Bytes of adapter weights copied into pool slots (rate() over the slot load time: copy bandwidth).",
             busiest=True),
    _counter("sglang_lora_pool_evictions_total", ("lora_name",),
             "Times the adapter was evicted from its pool slot to make room for another."),
    _histogram("sglang_lora_pool_slot_load_seconds", (), "Time to copy one adapter into a pool slot.",
               SLOT_LOAD_BUCKETS),
    _histogram("sglang_lora_pool_reuse_seconds", ("lora_name",),
               "Time from an adapter's eviction to its next slot load.", REUSE_BUCKETS),
    _counter("sglang_lora_pool_thrash_reloads_total", ("lora_name",),
             "Slot loads of an adapter evicted less than the thrash window (default 10 s) before."),
    _gauge("sglang_lora_pool_slots", ("state",),
           "Pool slots by state: used (held, base model included), free, pinned (held by pinned adapters)."),
    _counter("sglang_lora_pool_union_overflows_total", (),
             "DP attention: batches whose union of adapters over all DP ranks did not fit the pool (SGLang raised; "
             "the scheduler stopped)."),
    _histogram("sglang_lora_batch_adapters", (), "Distinct adapters (base model included) per forward batch.",
               BATCH_ADAPTER_BUCKETS),
    _counter("sglang_lora_admission_deferrals_total", ("lora_name", "reason"),
             "Requests passed over at admission, once each: reason = slot (their adapter could not get a pool "
             "slot), drain (SGLang's LoRA drainer held them back).", busiest=True),
    _counter("sglang_lora_requests_requeued_total", ("lora_name", "reason"),
             "Requests sent back from the running batch to the waiting queue: reason = retract (the KV cache "
             "ran out), preempt (a request of higher priority took their place).", busiest=True),
    _histogram("sglang_lora_drain_seconds", ("lora_name",),
               "Drain episodes of an adapter, by length: from SGLang's drainer holding back its new requests "
               "for a starving adapter until its running requests were done.", LATENCY_BUCKETS),
    _histogram("sglang_lora_admission_wait_seconds", ("lora_name",),
               "Time from a request's first deferral to its scheduling.", LATENCY_BUCKETS),
    # Adapter lifecycle
    _counter("sglang_lora_adapter_loads_total", ("lora_name", "trigger", "result"),
             "Adapter loads into host memory; trigger = startup, api, reload, on_demand.", busiest=True),
    _histogram("sglang_lora_adapter_load_seconds", ("trigger",), "Wall time of an adapter load over all ranks.",
               ADAPTER_LOAD_BUCKETS),
    _counter("sglang_lora_adapter_unloads_total", ("lora_name", "reason"),
             "Adapter unloads from host memory; reason = api, capacity (max_loaded_loras).", busiest=True),
    _gauge("sglang_lora_adapters_loaded", (), "Adapters held in host memory."),
    _gauge("sglang_lora_adapter_resident", ("lora_name", "tier", "pinned"),
           "1 while the adapter is held in the tier (host, gpu), 0 after it left."),
    _gauge("sglang_lora_adapter_memory_bytes", ("lora_name", "tier"),
           "Bytes the adapter takes: host = its weight copy; gpu = the pool slot it holds."),
    _gauge("sglang_lora_pool_capacity_bytes", (), "Bytes reserved for all pool slots."),
    # Routing (Gateway API Inference Extension model server protocol)
    _gauge("sglang_lora_requests_running", ("lora_name",), "Requests of the adapter in the running batch.",
           busiest=True),
    _gauge("sglang_lora_requests_waiting", ("lora_name",), "Requests of the adapter in the waiting queue.",
           busiest=True),
    _gauge("sglang_lora_requests_info", ("running_lora_adapters", "waiting_lora_adapters", "max_lora"),
           "Last update time (Unix seconds); labels list the running and waiting adapters and the slot count.",
           merge="max"),
    # Self
    _gauge("sglang_lora_telemetry_info", ("version", "sglang_version", "role"),
           "Always 1. role: the server's part in prefill/decode disaggregation (null, prefill, decode).",
           merge="max"),
    _gauge("sglang_lora_telemetry_hooks_active", ("hook",),
           "1 per hook attached, 0 if its target is missing in this SGLang.", merge="max"),
    _counter("sglang_lora_telemetry_errors_total", ("hook",), "Exceptions raised inside telemetry and swallowed."),
    _counter("sglang_lora_telemetry_label_overflow_total", (),
             "Requests whose adapter name was folded into __other__ past the label cap."),
)

BY_NAME: dict[str, Family] = {family.name: family for family in FAMILIES}
BUSIEST: tuple[str, ...] = tuple(family.name for family in FAMILIES if family.busiest)
