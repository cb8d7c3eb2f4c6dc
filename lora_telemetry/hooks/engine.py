"""In-process engine (the user's process): start our exporter once ``sglang.Engine`` is up."""

from __future__ import annotations

import logging
from typing import Any

from lora_telemetry import config, exporter
from lora_telemetry.hooks.base import hook, safely

logger = logging.getLogger("lora_telemetry")
_started: list[Any] = []


def _start_exporter() -> None:
    port = config.get().metrics_port
    if port is None or _started:
        return
    try:
        _started.append(exporter.start(port))
    except OSError as error:
        logger.error("lora_telemetry: cannot serve /metrics on port %s (LORA_TELEMETRY_METRICS_PORT): %s", port, error)
        _started.append(None)


@hook("engine_exporter", "sglang.srt.entrypoints.engine.Engine.__init__", "AFTER")
def engine_init(result: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    safely("engine_exporter", _start_exporter)
