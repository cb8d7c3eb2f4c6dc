"""Server-mode load-on-demand: with ``LORA_TELEMETRY_ADAPTER_DIR`` set, a request that names an
adapter found in that directory loads it first (once, however many requests ask at the same
moment), through SGLang's own load path. Names are checked as for ``LoRAEngine``; a name that
is not in the directory is left to SGLang, which rejects it as never loaded."""

from __future__ import annotations

from typing import Any

from lora_telemetry.adapters import AdapterDirectory, SingleFlight

_loads = SingleFlight()


def requested_names(obj: Any) -> set[str]:
    paths = obj.lora_path if isinstance(obj.lora_path, list) else [obj.lora_path]
    return {name for name in paths if isinstance(name, str) and name}


async def load_missing(tokenizer_manager: Any, obj: Any, directory: AdapterDirectory) -> None:
    """Load every adapter of ``obj`` that SGLang has never seen and ``directory`` holds."""
    from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput

    from lora_telemetry.hooks.tokenizer import load_trigger

    for name in sorted(requested_names(obj)):
        if name in tokenizer_manager.lora_ref_cache:
            continue  # loaded once already: SGLang reloads it itself if it was unloaded
        folder = directory.find(name)
        if folder is None:
            continue

        async def load(name: str = name, folder: str = str(folder)) -> None:
            if name in tokenizer_manager.lora_ref_cache:
                return
            token = load_trigger.set("on_demand")
            try:
                result = await tokenizer_manager.load_lora_adapter(
                    LoadLoRAAdapterReqInput(lora_name=name, lora_path=folder))
            finally:
                load_trigger.reset(token)
            if not result.success:
                raise ValueError(f"Failed to load LoRA adapter {name!r} from the adapter directory: "
                                 f"{result.error_message}")

        await _loads.run(name, load)
