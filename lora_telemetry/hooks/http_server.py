"""HTTP server (main process): our series appended to SGLang's own ``/metrics`` response.

SGLang mounts prometheus_client's ASGI app at ``/metrics``. We wrap that app: SGLang's
part is rendered exactly as before (asked for in the plain text format, uncompressed, so
the two parts join), and our part comes from the renderer's cache, rebuilt off the event
loop only when something changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
_NEGOTIATION_HEADERS = {b"accept", b"accept-encoding"}


def with_lora_metrics(inner: ASGIApp) -> ASGIApp:
    """An ASGI app that answers with ``inner``'s body followed by our series."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await inner(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _NEGOTIATION_HEADERS]
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await inner({**scope, "headers": headers}, receive, capture)
        renderer = runtime.get().renderer
        ours = await renderer.render_async() if renderer is not None else b""
        payload = b"".join(body) + ours
        response_headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 200), "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def _wrap_metrics_route(app: Any) -> None:
    for route in reversed(app.routes):
        if getattr(route, "path", None) == "/metrics" and hasattr(route, "app"):
            route.app = with_lora_metrics(route.app)
            return


@hook("http_metrics", "sglang.srt.utils.common.add_prometheus_middleware", "AROUND")
def add_prometheus_middleware(original: Any, app: Any, *args: Any, **kwargs: Any) -> Any:
    result = original(app, *args, **kwargs)
    safely("http_metrics", _wrap_metrics_route, app)
    return result
