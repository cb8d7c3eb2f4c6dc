"""OpenTelemetry spans for the adapter lifecycle and for requests, through the standard SDK.

Configured by the standard ``OTEL_*`` variables (endpoint, headers, timeout, service name,
resource attributes, sampler); spans go out over OTLP/HTTP from the SDK's batch processor,
in its own thread, so a collector that is down or hanging never slows a request: spans
queue, and past the queue's size they are dropped. Events carry their duration, so each span
is created after the fact with its real start time.

A request's spans (``lora.request`` in the tokenizer process with the host-tier result and the
host_load phase, ``lora.request.schedule`` in the scheduler with the gpu-tier result and the
scheduler's phases, made when the request's prefill is done) share one trace id derived from
SGLang's request id, so a trace shows both. When the host traces requests
itself (SGLang's ``--enable-trace``), :class:`HostSpanAnnotator` puts the same attributes on
the host's spans of the request instead, and these two spans of ours are not made.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry.version import __version__

logger = logging.getLogger("lora_telemetry")


def make_tracer() -> Any:
    """A tracer on our own provider (the host's global provider is left alone)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        logger.warning("lora_telemetry exports traces over OTLP http/protobuf only; ignoring %s", protocol)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "sglang")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("lora_telemetry", __version__)


def _ns_ago(seconds: float | None, ended_ago: float = 0.0) -> tuple[int, int]:
    end = time.time_ns() - int(ended_ago * 1e9)
    return end - int((seconds or 0.0) * 1e9), end


def request_context(rid: str) -> Any:
    """A remote parent context whose trace id is derived from the request id."""
    from opentelemetry import trace

    digest = hashlib.sha256(rid.encode()).digest()
    context = trace.SpanContext(trace_id=int.from_bytes(digest[:16], "big") or 1,
                                span_id=int.from_bytes(digest[16:24], "big") or 1, is_remote=True,
                                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def _result(hit: bool | None) -> str | None:
    return None if hit is None else ("hit" if hit else "miss")


def phase_attributes(phases: dict[str, float]) -> dict[str, float]:
    return {f"lora.phase.{phase}": seconds for phase, seconds in phases.items()}


class HostSpanAnnotator:
    """Adds the adapter and its cache results to the host's own spans of a request.

    Needs no exporter of ours: the host exports its spans.
    """

    def __init__(self) -> None:
        self.handlers = {ev.RequestSpanClosing: self._closing, ev.HostSpanLookup: self._lookup,
                         ev.RequestPhases: self._phases}

    def _closing(self, e: ev.RequestSpanClosing) -> None:
        e.attributes["lora.name"] = e.lora_name
        if e.host_hit is not None:
            e.attributes["lora.cache.host"] = _result(e.host_hit)
        e.attributes.update(phase_attributes(e.phases))

    def _lookup(self, e: ev.HostSpanLookup) -> None:
        e.span.set_attributes({"lora.name": e.lora_name, f"lora.cache.{e.tier}": _result(e.hit)})

    def _phases(self, e: ev.RequestPhases) -> None:
        if e.span is not None:
            e.span.set_attributes(phase_attributes(e.phases()))


class TraceSink:
    """Renders events as spans; knows nothing about SGLang."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.handlers = {
            ev.AdapterLoaded: self._loaded,
            ev.AdapterUnloaded: self._unloaded,
            ev.SlotLoaded: self._slot_loaded,
            ev.SlotEvicted: self._evicted,
            ev.RequestFinished: self._request,
            ev.RequestPhases: self._schedule,
        }

    def _span(self, name: str, seconds: float | None, attributes: dict[str, Any], error: str | None = None,
              context: Any = None, ended_ago: float = 0.0) -> None:
        from opentelemetry.trace import Status, StatusCode

        start, end = _ns_ago(seconds, ended_ago)
        span = self.tracer.start_span(name, context=context, start_time=start,
                                      attributes={k: v for k, v in attributes.items() if v is not None})
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)

    def _loaded(self, e: ev.AdapterLoaded) -> None:
        self._span("lora.adapter.load", e.seconds, {"lora.name": e.lora_name, "lora.trigger": e.trigger,
                                                     "lora.rank": e.rank, "lora.pinned": e.pinned,
                                                     "lora.bytes": e.bytes},
                   None if e.success else (e.error or "load failed"))

    def _unloaded(self, e: ev.AdapterUnloaded) -> None:
        self._span("lora.adapter.unload", e.seconds, {"lora.name": e.lora_name, "lora.reason": e.reason})

    def _slot_loaded(self, e: ev.SlotLoaded) -> None:
        self._span("lora.pool.slot_load", e.seconds, {"lora.name": e.lora_name, "lora.slot": e.slot})

    def _evicted(self, e: ev.SlotEvicted) -> None:
        self._span("lora.pool.evict", 0.0, {"lora.name": e.lora_name, "lora.slot": e.slot})

    def _request(self, e: ev.RequestFinished) -> None:
        if e.rid is None or e.host_traced:
            return
        self._span("lora.request", e.e2e_s, {
            "lora.name": e.lora_name, "lora.cache.host": _result(e.host_hit), "lora.outcome": e.outcome,
            "sglang.rid": e.rid, **phase_attributes(e.phases()),
            "gen_ai.usage.input_tokens": e.prompt_tokens, "gen_ai.usage.output_tokens": e.generation_tokens},
            context=request_context(e.rid))

    def _schedule(self, e: ev.RequestPhases) -> None:
        if e.span is not None:
            return  # the host's own span of the request carries the phases
        phases = e.phases()
        self._span("lora.request.schedule", sum(phases.values()),
                   {"lora.name": e.lora_name, "lora.cache.gpu": _result(e.gpu_hit), "sglang.rid": e.rid,
                    **phase_attributes(phases)},
                   context=request_context(e.rid), ended_ago=max(0.0, time.perf_counter() - e.prefilled))
