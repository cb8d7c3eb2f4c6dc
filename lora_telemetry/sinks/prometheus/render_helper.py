"""The render process's own side (see :mod:`.render_process`): a render per request from SGLang's
main process, until that process closes the pipe.

Run as ``python -m lora_telemetry.sinks.prometheus.render_helper [state_dir]``. It runs at the lowest
CPU priority: on a host with few cores, SGLang's own processes come first and a render can wait.
"""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path
from typing import BinaryIO

from lora_telemetry.sinks.prometheus.exposition import Renderer
from lora_telemetry.sinks.prometheus.render_process import LENGTH, read_exactly, write_frame
from lora_telemetry.sinks.prometheus.store import Store


class _HelperStore(Store):
    """The main process's store as last sent: chunks unmarshalled again only when their bytes changed."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: dict[str, list[tuple[bytes, dict]]] = {}

    def load(self, version: int, packed: dict[str, list[bytes]]) -> None:
        for name in self.values:
            before = self._chunks.get(name, [])
            chunks = [before[i] if i < len(before) and before[i][0] == data else (data, marshal.loads(data))
                      for i, data in enumerate(packed.get(name, ()))]
            if chunks != before:
                series: dict = {}
                for _, part in chunks:
                    series.update(part)
                self.values[name] = series
                self._chunks[name] = chunks
        self.version = version


def serve(state_dir: Path | None, requests: BinaryIO, answers: BinaryIO) -> None:
    """The helper's loop: a render per request, until the main process closes the pipe."""
    os.nice(19)
    store = _HelperStore()
    renderer = Renderer(store, state_dir)
    while True:
        try:
            header = b"".join(read_exactly(requests, LENGTH.size))
        except EOFError:
            return
        version, packed = marshal.loads(b"".join(read_exactly(requests, LENGTH.unpack(header)[0])))
        store.load(version, packed)
        write_frame(answers, renderer.render())


if __name__ == "__main__":
    serve(Path(sys.argv[1]) if len(sys.argv) > 1 else None, os.fdopen(0, "rb", buffering=0),
          os.fdopen(1, "wb", buffering=0))
