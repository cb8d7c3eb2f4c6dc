"""The bench client's reading of SGLang's event stream."""

from __future__ import annotations

import asyncio
import json

from lora_telemetry.bench.traffic import sse_lines


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


def _lines(*parts: bytes) -> list[str]:
    async def collect() -> list[str]:
        return [line async for line in sse_lines(_chunks(*parts))]

    return asyncio.run(collect())


def test_a_chunk_whose_text_holds_unicode_line_separators_stays_one_line():
    """A random-weight model on an H200 wrote U+2028-like characters into its text; split there, the
    chunk was no JSON and the bench stopped."""
    text = "a\u2028b\u0085c\x1dd"
    event = ("data: " + json.dumps({"text": text}, ensure_ascii=False) + "\r\n\r\n").encode()
    lines = _lines(event[:9], event[9:20], event[20:], b"data: [DONE]\n\n")
    assert [json.loads(line[5:])["text"] for line in lines if line.startswith("data: {")] == [text]
    assert lines.count("data: [DONE]") == 1 and all("\r" not in line for line in lines)


def test_a_stream_cut_without_a_last_newline_still_yields_its_tail():
    assert _lines(b"data: 1\ndata: ", b"2") == ["data: 1", "data: 2"]
