"""Observability for SGLang's multi-LoRA serving: per-adapter metrics, cache and lifecycle
telemetry, logs and traces, attached to stock SGLang through its plugin entry point."""

from __future__ import annotations

from typing import Any

from lora_telemetry.version import __version__

__all__ = ["LoRAEngine", "__version__"]


def __getattr__(name: str) -> Any:
    # LoRAEngine imports sglang; keep ``import lora_telemetry`` light for the plugin.
    if name == "LoRAEngine":
        from lora_telemetry.engine import LoRAEngine

        return LoRAEngine
    raise AttributeError(name)
