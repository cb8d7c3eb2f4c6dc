"""The small typed events hooks produce and sinks render.

Hooks know SGLang and nothing about Prometheus, logs or traces; sinks know these events
and nothing about SGLang. Timestamps are taken in the process where the event happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASE = "__base__"  # requests on the base model
UNKNOWN = "__unknown__"  # names that were never loaded (rejected requests)
OTHER = "__other__"  # names past the label cap
# The phases of a request's time to first token, in the order they happen (docs/SPEC.md)
PHASES = ("http", "host_load", "dispatch", "queue", "admission", "slot_load", "prefill", "output")


@dataclass(slots=True)
class RequestAdmitted:
    lora_name: str


@dataclass(slots=True)
class RequestFinished:
    lora_name: str
    outcome: str  # finished | aborted
    prompt_tokens: int
    generation_tokens: int
    ttft_s: float | None
    e2e_s: float | None
    rid: str | None = None
    host_hit: bool | None = None  # None: the base model, which has no host-tier lookup
    host_traced: bool = False  # the host traces this request itself, and its span carries our attributes
    # perf_counter times in the tokenizer process, 0.0 where unknown, for its phases (:func:`tokenizer_phases`)
    resolved: float = 0.0
    created: float = 0.0
    first_chunk: float = 0.0
    queued: float = 0.0
    prefilled: float = 0.0
    received: float = 0.0  # the HTTP server handed it to SGLang's app; 0.0 if it did not come over HTTP

    def phases(self) -> dict[str, float]:
        return tokenizer_phases(self.resolved, self.created, self.first_chunk, self.queued, self.prefilled,
                                self.received)


def tokenizer_phases(resolved: float, created: float, first_chunk: float, queued: float,
                     prefilled: float, received: float = 0.0) -> dict[str, float]:
    """http, host_load, dispatch and output of a request (see docs/SPEC.md), from its receipt by the
    HTTP server (``received``), its arrival in SGLang (``created``), its adapter in host memory
    (``resolved``), its entry into the scheduler's queue (``queued``), its first token sampled
    (``prefilled``) and its first chunk handed on (``first_chunk``); the scheduler's times already in
    this process's clock. A phase whose ends are not both known is left out."""
    phases = {}
    if received and created:
        phases["http"] = max(0.0, created - received)
    if created and resolved:
        phases["host_load"] = max(0.0, resolved - created)
    if queued and resolved:
        phases["dispatch"] = max(0.0, queued - resolved)
    if first_chunk and prefilled:
        phases["output"] = max(0.0, first_chunk - prefilled)
    return phases


@dataclass(slots=True)
class RequestPhases:
    """A request's prefill is done: where its time went in the scheduler (see :meth:`phases`).

    Timestamps are ``time.perf_counter()`` values of the scheduler process. ``span``: the host's
    open span of the request when the host traces it itself, else None."""

    lora_name: str
    rid: str
    gpu_hit: bool | None  # None: no gpu lookup was made for it here
    queued: float  # entry into the scheduler's waiting queue
    refused: float  # first refusal at admission; 0.0 if never refused
    scheduled: float
    prefilled: float  # its first token sampled
    slot_load_s: float  # the slot load its batch made for it; 0.0 on a gpu hit
    span: Any = None

    def phases(self) -> dict[str, float]:
        """Queued -> [queue] -> first refused -> [admission] -> scheduled -> [slot_load, prefill] -> done."""
        admission = max(0.0, self.scheduled - self.refused) if self.refused else 0.0
        return {"queue": max(0.0, self.scheduled - self.queued - admission), "admission": admission,
                "slot_load": self.slot_load_s, "prefill": max(0.0, self.prefilled - self.scheduled - self.slot_load_s)}


@dataclass(slots=True)
class DrainStarted:
    """SGLang's LoRA drainer holds back new requests of ``lora_name`` so that its slot can go to
    ``draining_for``, whose requests waited past ``--lora-drain-wait-threshold``."""

    lora_name: str
    draining_for: str


@dataclass(slots=True)
class DrainEnded:
    """The drain ended ``seconds`` after it started: the adapter's running requests were done (or the
    drainer let it go)."""

    lora_name: str
    draining_for: str
    seconds: float


@dataclass(slots=True)
class PoolOverflow:
    """DP attention: the adapters of every DP rank's batch, whose union each rank's pool must hold,
    were more than its slots; SGLang raised and the scheduler stops. ``local_adapters``: of this rank's batch."""

    local_adapters: int
    slots: int
    error: str


@dataclass(slots=True)
class RequestRequeued:
    """A request already scheduled went back to the waiting queue: ``retract`` (the KV cache ran out
    under the running batch) or ``preempt`` (a request of higher priority took its place)."""

    lora_name: str
    reason: str


@dataclass(slots=True)
class RequestRejected:
    requested: str
    error: str


@dataclass(slots=True)
class CacheLookup:
    lora_name: str
    tier: str  # host | gpu
    hit: bool
    rid: str | None = None
    host_traced: bool = False  # the host traces this request itself (see HostSpanLookup)
    at_admission: bool = False  # overlap loading: looked up at the first admission check, not in a batch


@dataclass(slots=True)
class DecodingAdapters:
    """A prefill batch is about to run (access log only): the adapters with unfinished requests in
    the running batch, which a priority pool keeps while another victim is left."""

    lora_names: tuple[str, ...]


@dataclass(slots=True)
class HostSpanLookup:
    """A cache lookup of a request the host traces itself, with the host's open OTel span of
    that request in this process (only then: untraced lookups cost no second event)."""

    span: Any
    lora_name: str
    tier: str
    hit: bool


@dataclass(slots=True)
class RequestSpanClosing:
    """The host is about to close its own span of a request (SGLang's ``--enable-trace``);
    ``attributes`` is what it will set on that span, open to additions."""

    lora_name: str
    host_hit: bool | None
    attributes: dict[str, Any]
    phases: dict[str, float] = field(default_factory=dict)  # host_load, dispatch, output where known


@dataclass(slots=True)
class SlotLoaded:
    lora_name: str
    slot: int
    seconds: float | None  # None: an overlapped copy, timed when done (SlotCopied)
    since_eviction_s: float | None = None  # the adapter was evicted this long ago (a reuse)
    thrash: bool = False  # ... within the thrash window
    bytes: int = 0  # of the adapter's weights the copy reads (0 for the base model's slot, which is zeroed)
    cause: str = "admission"  # admission: for requests being admitted; reload: for a decode step of running ones


@dataclass(slots=True)
class SlotCopied:
    """An overlapped (non-blocking) copy into a slot is done, ``seconds`` after its launch."""

    lora_name: str
    seconds: float


@dataclass(slots=True)
class SlotEvicted:
    lora_name: str
    slot: int
    incoming: str | None = None  # the adapter that took the slot


@dataclass(slots=True)
class PoolState:
    used: int
    free: int
    pinned: int
    capacity_bytes: int
    memory_only: bool = False  # from a rank that reports memory only (see Residency)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """What a pool is: its slots, its eviction policy, bytes per slot."""

    slots: int
    policy: str  # lru | fifo | priority
    slot_bytes: int
    priorities: tuple[tuple[str, int], ...] = ()  # with policy priority: (adapter, priority), by name


@dataclass(slots=True)
class PoolBatch:
    """The pool was asked to hold a forward batch's adapters (only while an access log is kept)."""

    time: float
    adapters: tuple[str, ...]  # in the order the pool marks them used
    pool: PoolSettings


@dataclass(slots=True)
class BatchComposition:
    """Forward batches since the last one of these: distinct adapters -> number of batches."""

    batches: dict[int, int]


@dataclass(slots=True)
class AdmissionDeferred:
    """A waiting request was first passed over: its adapter could not get a slot (``slot``), or
    SGLang's LoRA drainer held it back by policy (``drain``). Once per request."""

    lora_name: str
    reason: str  # slot | drain


@dataclass(slots=True)
class AdmissionWaited:
    """A request that had been passed over was scheduled, ``seconds`` after its first refusal."""

    lora_name: str
    seconds: float


@dataclass(slots=True)
class AdapterLoaded:
    lora_name: str
    trigger: str  # startup | api | reload | on_demand
    success: bool
    seconds: float
    error: str | None = None
    rank: int | None = None
    pinned: bool = False
    bytes: int | None = None


@dataclass(slots=True)
class AdapterUnloaded:
    lora_name: str
    reason: str  # api | capacity
    seconds: float


@dataclass(slots=True)
class Residency:
    """An adapter entered (``resident``) or left a tier; ``bytes`` it takes there.

    ``memory_only``: seen by a rank that holds its own copy but does not count (a TP or PP
    rank other than the replica's reporting one); only its bytes are rendered, and they add
    up with the other ranks' bytes to what the replica holds."""

    lora_name: str
    tier: str  # host | gpu
    resident: bool
    bytes: int
    pinned: bool
    memory_only: bool = False


@dataclass(slots=True)
class RoutingState:
    running: dict[str, int]
    waiting: dict[str, int]
    max_lora: int
    timestamp: float


@dataclass(slots=True)
class HookFailed:
    hook: str
    error: str


@dataclass(slots=True)
class ServingRole:
    """The server's part in prefill/decode disaggregation: null (none), prefill or decode. Both
    servers of a pair see each request; dashboards count it on the decode side."""

    role: str


@dataclass(slots=True)
class TelemetryStarted:
    """The plugin is up in the main process: its version, SGLang's, and which hooks attached."""

    version: str
    sglang_version: str
    hooks_active: dict[str, bool] = field(default_factory=dict)
