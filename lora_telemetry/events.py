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


@dataclass(slots=True)
class SlotLoaded:
    lora_name: str
    slot: int
    seconds: float


@dataclass(slots=True)
class SlotEvicted:
    lora_name: str
    slot: int


@dataclass(slots=True)
class PoolState:
    used: int
    free: int
    pinned: int
    capacity_bytes: int


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """What a pool is: its slots, its eviction policy, bytes per slot."""

    slots: int
    policy: str  # lru | fifo
    slot_bytes: int


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
    lora_name: str


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
    """An adapter entered (``resident``) or left a tier; ``bytes`` it takes there."""

    lora_name: str
    tier: str  # host | gpu
    resident: bool
    bytes: int
    pinned: bool


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
class TelemetryStarted:
    """The plugin is up in the main process: its version, SGLang's, and which hooks attached."""

    version: str
    sglang_version: str
    hooks_active: dict[str, bool] = field(default_factory=dict)
