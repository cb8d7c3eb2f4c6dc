"""Server-mode load-on-demand: with ``LORA_TELEMETRY_ADAPTER_DIR`` set, a request that names an
adapter found in that directory loads it first (once, however many requests ask at the same
moment), through SGLang's own load path. Names are checked as for ``LoRAEngine``; a name that
is not in the directory is left to SGLang, which rejects it as never loaded.

SGLang loads no adapter at runtime where there are data-parallel replicas (``--dp N``: it asserts
in ``load_lora_adapter``; its own ``/load_lora_adapter`` answers 500). There the directory is not
used, which the server says once at start-up, instead of a failed load per request; requests naming
an adapter it holds are rejected as never loaded."""

from __future__ import annotations

import logging
from typing import Any

from lora_telemetry import config
from lora_telemetry.adapters import AdapterDirectory, SingleFlight
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.tokenizer import TOKENIZER
from lora_telemetry.load_context import load_trigger

logger = logging.getLogger("lora_telemetry")
WARMUP = "sglang.srt.entrypoints.http_server._wait_and_warmup"
_loads = SingleFlight()
_directories: dict[Any, AdapterDirectory] = {}


def loads_at_runtime(server_args: Any) -> bool:
    """Whether SGLang can load an adapter while it serves: not with data-parallel replicas."""
    return getattr(server_args, "dp_size", 1) <= 1


def on_demand_directory(server_args: Any) -> AdapterDirectory | None:
    root = config.get().adapter_dir
    if root is None or not loads_at_runtime(server_args):
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


def _directory_of(tokenizer_manager: Any) -> AdapterDirectory | None:
    return on_demand_directory(tokenizer_manager.server_args)


def _raise(error: Exception) -> None:
    raise error


@hook("tokenizer_on_demand", f"{TOKENIZER}._resolve_lora_path", "AROUND",
      loses="loading on first request from LORA_TELEMETRY_ADAPTER_DIR")
async def resolve_lora_path(original: Any, self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    """With ``LORA_TELEMETRY_ADAPTER_DIR`` set, adapters found there are loaded before SGLang resolves."""
    directory = safely("tokenizer_on_demand", _directory_of, self)
    if directory is not None:
        try:
            await load_missing(self, obj, directory)
        except ValueError:
            raise  # a failed load rejects the request, as it should
        except Exception as error:  # our own fault: count it, let SGLang resolve as usual
            safely("tokenizer_on_demand", _raise, error)
    return await original(self, obj, *args, **kwargs)


def _say_if_unusable(server_args: Any) -> None:
    if not loads_at_runtime(server_args):
        logger.warning("lora_telemetry: LORA_TELEMETRY_ADAPTER_DIR is not used and no adapter is loaded on "
                       "demand or from a plan: SGLang loads no adapter at runtime with --dp %d (data-parallel "
                       "replicas). Give the adapters with --lora-paths; requests naming others are rejected.",
                       server_args.dp_size)


@hook("adapter_dir_check", WARMUP, "BEFORE", loses="the start-up message when --dp N rules out the adapter directory",
      wanted=lambda cfg: cfg.adapter_dir is not None)
def wait_and_warmup(*args: Any, **kwargs: Any) -> None:
    """At start-up, in the HTTP server's process: say once what per-request loads could not."""
    safely("adapter_dir_check", _say_if_unusable, kwargs.get("server_args", args[0] if args else None))
