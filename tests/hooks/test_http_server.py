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

