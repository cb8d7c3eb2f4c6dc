"""A ``/metrics`` endpoint for an in-process ``sglang.Engine``, which serves none itself.

Started by the plugin when ``LORA_TELEMETRY_METRICS_PORT`` is set, or by calling
:func:`start`. It answers with SGLang's own multiprocess series (when SGLang runs with
``enable_metrics``) followed by ours, the same response SGLang's HTTP server gives.
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lora_telemetry import runtime


def _sglang_series() -> bytes:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return b""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics here")
            return
        renderer = runtime.get().renderer
        body = _sglang_series() + (renderer.render() if renderer else b"")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would flood the host's stderr


def start(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server (``.shutdown()``)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, name="lora-telemetry-exporter", daemon=True).start()
    return server
