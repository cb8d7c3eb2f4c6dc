"""SGLang's own spans get our attributes whether or not our own traces are on."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lora_telemetry import events as ev
from lora_telemetry import runtime


def test_the_annotator_is_on_without_our_traces(monkeypatch, tmp_path):
    monkeypatch.delenv("LORA_TELEMETRY_TRACES", raising=False)
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "events.log"))
    runtime.reset()
    try:
        exported = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exported))
        span = provider.get_tracer("sglang-like").start_span("Scheduler [TP 0]")

        closing = {"gen_ai.request.id": "r1"}
        runtime.emit(ev.RequestSpanClosing("qa", False, closing))
        runtime.emit(ev.HostSpanLookup(span, "qa", "gpu", True))
        span.end()

        assert closing == {"gen_ai.request.id": "r1", "lora.name": "qa", "lora.cache.host": "miss"}
        [finished] = exported.get_finished_spans()
        assert dict(finished.attributes) == {"lora.name": "qa", "lora.cache.gpu": "hit"}
    finally:
        runtime.reset()


def test_the_base_model_gets_its_name_and_no_host_result(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "events.log"))
    runtime.reset()
    try:
        closing: dict = {}
        runtime.emit(ev.RequestSpanClosing(ev.BASE, None, closing))
        assert closing == {"lora.name": ev.BASE}
    finally:
        runtime.reset()
