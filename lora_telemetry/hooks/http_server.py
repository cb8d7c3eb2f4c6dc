"""HTTP server (main process): our series appended to SGLang's own ``/metrics`` response, the
time each request reached SGLang's app, and the server's role in prefill/decode disaggregation.

SGLang mounts prometheus_client's ASGI app at ``/metrics``. We wrap that app: SGLang's
part is rendered exactly as before (asked for in the plain text format, uncompressed, so
the two parts join), and our part comes from the renderer's cache, rebuilt off the event
loop only when something changed.

A request's time to first token, as its client sees it, starts before SGLang stamps its
arrival: the HTTP server reads and parses its body, SGLang's middlewares and validation run.
The whole app is wrapped so that each request carries the moment the server read its first
bytes (``http_arrival``, read by the tokenizer hook in the same task): the ``http`` phase.
Uvicorn reads a request in its protocol's ``data_received`` and starts the app in a task of its
own, which runs only once the event loop has worked through what was ready before it: on a busy
server that wait is milliseconds, so the first read is stamped there, per connection, and the
app's start stands in where uvicorn's protocol is not the one hooked.
"""

from __future__ import annotations

import contextvars
import importlib.util
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks.base import hook, safely

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
_NEGOTIATION_HEADERS = {b"accept", b"accept-encoding"}
http_arrival: contextvars.ContextVar[float] = contextvars.ContextVar("lora_http_arrival", default=0.0)
# client (host, port) -> perf_counter time uvicorn first read its current request; taken by the app
first_read: dict[Any, float] = {}
_FIRST_READ_LIMIT = 10_000  # requests cut off before the app ran leave their stamp; past this, start over
# A stamp older than this belongs to a request that never reached the app, on a connection whose client
# address came back later: the app's start stands in
_FIRST_READ_STALE_S = 60.0


def stamping_arrival(inner: ASGIApp) -> ASGIApp:
    """``inner`` with the perf_counter time each request reached it in ``http_arrival``.

    A plain function that returns ``inner``'s coroutine: no frame of its own while the request
    runs. The server runs each request in a task of its own, whose context the value stays in."""

    now, stamp, read = time.perf_counter, http_arrival.set, first_read.pop

    def app(scope: dict, receive: Callable, send: Callable) -> Awaitable[None]:
        if scope["type"] == "http":
            started, first = now(), read(scope.get("client"), 0.0)
            stamp(first if started - first < _FIRST_READ_STALE_S else started)
        return inner(scope, receive, send)

    return app


def _stamp_arrivals(app: Any) -> None:
    """SGLang sets up metrics when its app starts, after Starlette built the app's middleware
    stack (then ``add_middleware`` is refused): the built stack is wrapped instead."""
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    app.middleware_stack = stamping_arrival(app.middleware_stack)


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
        ours = await renderer.render_async() if renderer is not None else []
        pieces = [*body, *ours]  # sent one by one: joining megabytes would hold the event loop
        response_headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        response_headers.append((b"content-length", str(sum(map(len, pieces))).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 200), "headers": response_headers})
        for piece in pieces[:-1]:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": pieces[-1] if pieces else b""})

    return app


def _wrap_metrics_route(app: Any) -> None:
    for route in reversed(app.routes):
        if getattr(route, "path", None) == "/metrics" and hasattr(route, "app"):
            route.app = with_lora_metrics(route.app)
            return


def _announce_role() -> None:
    """SGLang's configuration is published by the time the HTTP app is set up."""
    from sglang.srt.runtime_context import get_disagg

    runtime.emit(ev.ServingRole(str(get_disagg().disaggregation_mode)))


@hook("http_metrics", "sglang.srt.utils.common.add_prometheus_middleware", "AROUND",
      loses="every sglang_lora_* series on SGLang's /metrics, the http phase, and the server's role")
def add_prometheus_middleware(original: Any, app: Any, *args: Any, **kwargs: Any) -> Any:
    result = original(app, *args, **kwargs)
    safely("http_metrics", _wrap_metrics_route, app)
    safely("http_metrics", _stamp_arrivals, app)
    safely("http_metrics", _announce_role)
    return result


def _read(protocol: Any) -> None:
    """A new request's first bytes (none of the connection's requests is still in progress)."""
    cycle = protocol.cycle
    if protocol.client is not None and (cycle is None or cycle.response_complete):  # None: a unix socket
        if len(first_read) >= _FIRST_READ_LIMIT:
            first_read.clear()
        first_read.setdefault(protocol.client, time.perf_counter())


# Uvicorn's ``http="auto"`` (SGLang's setting) parses with httptools where it is installed, else with h11.
_PROTOCOL = ("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol" if importlib.util.find_spec("httptools")
             else "uvicorn.protocols.http.h11_impl.H11Protocol")


@hook("http_read", f"{_PROTOCOL}.data_received", "BEFORE",
      loses="the http phase's start at the server's first read of a request (it starts when the app runs)")
def data_received(self: Any, *args: Any, **kwargs: Any) -> None:
    safely("http_read", _read, self)
