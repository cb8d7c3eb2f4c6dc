"""What the code that loads adapters and the hooks that count the loads share, owned by neither.

The engine, the server's on-demand loading and a plan's preload load adapters through SGLang; the
tokenizer hook counts each load with its trigger, which travels in a context variable set around
the load. ``held`` reads SGLang's loaded adapters (its ``LoRARef`` objects) as a preload compares
them with a plan. Kept apart so that the engine does not import the hooks, nor the hooks the engine.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from lora_telemetry.preload import Loaded

# Why an adapter is being loaded: api (default), reload, on_demand, preload; read by the load hook.
load_trigger: contextvars.ContextVar[str] = contextvars.ContextVar("lora_load_trigger", default="api")


def held(refs: Mapping[str, Any]) -> dict[str, Loaded]:
    """SGLang's loaded adapters (its ``LoRARef`` objects by name), as the preload sees them."""
    return {name: Loaded(str(getattr(ref, "lora_path", "") or ""), bool(getattr(ref, "pinned", False)))
            for name, ref in refs.items()}
