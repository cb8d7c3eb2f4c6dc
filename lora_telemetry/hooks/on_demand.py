"""Server-mode load-on-demand: with ``LORA_TELEMETRY_ADAPTER_DIR`` set, a request that names an
adapter found in that directory loads it first (once, however many requests ask at the same
moment), through SGLang's own load path. Names are checked as for ``LoRAEngine``; a name that
is not in the directory is left to SGLang, which rejects it as never loaded."""

from __future__ import annotations

from typing import Any

from lora_telemetry import config
from lora_telemetry.adapters import AdapterDirectory, SingleFlight
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.tokenizer import TOKENIZER, load_trigger

_loads = SingleFlight()
_directories: dict[Any, AdapterDirectory] = {}


def on_demand_directory() -> AdapterDirectory | None:
    root = config.get().adapter_dir
    if root is None:
        return None
    if root not in _directories:
        _directories[root] = AdapterDirectory(root)
    return _directories[root]


def requested_names(obj: Any) -> set[str]:
    paths = obj.lora_path if isinstance(obj.lora_path, list) else [obj.lora_path]
    return {name for name in paths if isinstance(name, str) and name}


async def load_missing(tokenizer_manager: Any, obj: Any, directory: AdapterDirectory) -> None:
    """Load every adapter of ``obj`` that SGLang has never seen and ``directory`` holds."""
    from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput

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


def _raise(error: Exception) -> None:
    raise error


@hook("tokenizer_on_demand", f"{TOKENIZER}._resolve_lora_path", "AROUND",
      loses="loading on first request from LORA_TELEMETRY_ADAPTER_DIR")
async def resolve_lora_path(original: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    """With ``LORA_TELEMETRY_ADAPTER_DIR`` set, adapters found there are loaded before SGLang resolves."""
    directory = safely("tokenizer_on_demand", on_demand_directory)
    if directory is not None:
        try:
            await load_missing(self, obj, directory)
        except ValueError:
            raise  # a failed load rejects the request, as it should
        except Exception as error:  # our own fault: count it, let SGLang resolve as usual
            safely("tokenizer_on_demand", _raise, error)
    return await original(self, obj, *args, **kwargs)
