"""An OTLP/HTTP trace receiver on a loopback port that decodes what arrives with the OTLP protobufs."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append({
                                "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "status": span.status.code, "message": span.status.message,
                                "service": service.get("service.name"),
                                "duration_ns": span.end_time_unix_nano - span.start_time_unix_nano})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]

    def close(self) -> None:
        self.server.shutdown()


def phases_by_rid(spans: list[dict]) -> dict[str, dict[str, float]]:
    """rid -> the TTFT phases our request spans carried (``lora.phase.*``), and its gpu-tier result."""
    out: dict[str, dict[str, float]] = {}
    for span in spans:
        if span["name"] in ("lora.request", "lora.request.schedule"):
            attributes = span["attributes"]
            out.setdefault(attributes["sglang.rid"], {}).update(
                {k.removeprefix("lora.phase."): v for k, v in attributes.items() if k.startswith("lora.phase.")})
            if "lora.cache.gpu" in attributes:
                out[attributes["sglang.rid"]]["gpu"] = attributes["lora.cache.gpu"]
    return out
