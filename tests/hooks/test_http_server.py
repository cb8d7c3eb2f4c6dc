"""The HTTP app wrapper: each request carries the moment it reached SGLang's app, into the tasks
it starts; put in after the app started, as SGLang sets up its metrics then."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from lora_telemetry.hooks import http_server


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/generate")
    async def generate() -> dict:
        await asyncio.sleep(0.01)
        return {"arrival": http_server.http_arrival.get(), "seen": time.perf_counter()}

    @app.post("/stream")
    async def stream() -> StreamingResponse:  # SGLang streams from a generator run in a task of its own
        async def chunks():
            yield str(http_server.http_arrival.get()).encode()

        return StreamingResponse(chunks())

    return app


def test_each_request_carries_its_own_arrival_also_in_streamed_responses():
    app = _app()
    with TestClient(app) as client:  # started: Starlette refuses add_middleware from here on
        http_server._stamp_arrivals(app)
        before = time.perf_counter()
        first, second = client.post("/generate").json(), client.post("/generate").json()
        streamed = float(client.post("/stream").text)
    assert before < first["arrival"] < first["seen"] < second["arrival"] < second["seen"] < streamed
    assert http_server.http_arrival.get() == 0.0  # nothing leaks into the caller's context



def test_the_arrival_is_uvicorns_first_read_when_the_loop_is_busy_before_the_app_runs(monkeypatch):
    """Uvicorn (h11, as SGLang runs it here) reads a request, then the app runs in a task of its own once the
    event loop is free: a loop kept busy for 50 ms after the read does not hide that time from the http phase.
    Requests on one keep-alive connection each get their own first read."""
    import threading

    import httpx
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from lora_telemetry.testbed.server import free_port

    original = H11Protocol.data_received

    def hooked(self, data):  # as SGLang's HookRegistry runs a BEFORE hook
        http_server.data_received(self, data)
        reads.append(time.perf_counter())
        original(self, data)
        time.sleep(0.05)  # the loop stays busy after the read: the app's task waits

    reads: list[float] = []
    monkeypatch.setattr(H11Protocol, "data_received", hooked)
    app = _app()
    http_server._stamp_arrivals(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="h11", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [client.post("/generate").json() for _ in range(2)]
    finally:
        server.should_exit = True
        thread.join(5)
    assert len(reads) == 2
    for read, answer in zip(reads, answers, strict=True):
        assert answer["arrival"] <= read and answer["seen"] - answer["arrival"] >= 0.05
    assert not http_server.first_read  # each stamp was taken by its request


def test_a_stale_first_read_or_a_unix_socket_falls_back_to_the_apps_start(monkeypatch):
    """A stamp left by a request that never reached the app, on a client address that came back a minute later,
    is not this request's; a unix socket has no client address to tell connections apart."""
    seen = []

    async def inner(scope, receive, send) -> None:
        seen.append(http_server.http_arrival.get())

    monkeypatch.setattr(http_server, "first_read", {("10.0.0.1", 5000): time.perf_counter() - 61.0})
    app = http_server.stamping_arrival(inner)
    before = time.perf_counter()
    asyncio.run(app({"type": "http", "client": ("10.0.0.1", 5000)}, None, None))
    assert seen[0] >= before
    http_server._read(type("Protocol", (), {"cycle": None, "client": None})())
    assert http_server.first_read == {}
