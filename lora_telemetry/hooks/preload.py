"""HTTP server start-up: a plan's adapters are loaded before the server says it is ready.

With ``LORA_TELEMETRY_PLAN`` set, SGLang's warm-up thread first loads the plan's adapters
from ``LORA_TELEMETRY_ADAPTER_DIR`` through the server's own ``/load_lora_adapter`` (so they
take SGLang's path, its checks and ``--max-loaded-loras``), then warms up as usual. A plan
that does not fit this server's pool is refused with one message, and serving starts without it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lora_telemetry import config
from lora_telemetry.hooks.base import hook, safely
from lora_telemetry.hooks.on_demand import WARMUP, loads_at_runtime, on_demand_directory
from lora_telemetry.hooks.tokenizer import preloading
from lora_telemetry.load_context import held
from lora_telemetry.plan import PlanError
from lora_telemetry.preload import Loaded, preload

logger = logging.getLogger("lora_telemetry")
SERVER_UP_TIMEOUT_S = 600.0


def _session(server_args: Any) -> tuple[str, dict[str, str]]:
    api_key = getattr(server_args, "api_key", None)
    return server_args.url(), ({"Authorization": f"Bearer {api_key}"} if api_key else {})


def _wait_until_up(requests: Any, url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + SERVER_UP_TIMEOUT_S
    while True:
        try:
            if requests.get(url + "/model_info", headers=headers, timeout=5, verify=False).status_code == 200:
                return
        except requests.exceptions.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not answer {url}/model_info within {SERVER_UP_TIMEOUT_S:g} s")
        time.sleep(0.2)


def _loaded() -> dict[str, Loaded]:
    from sglang.srt.entrypoints import http_server

    # The registry, not lora_ref_cache: SGLang keeps an unloaded adapter's entry in the cache.
    return held(http_server._global_state.tokenizer_manager.lora_registry.get_all_adapters())


def _error(answer: Any) -> str | None:
    """None for SGLang's answer to a successful load or unload, else its error message."""
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    return None if answer.status_code == 200 and body.get("success", True) else \
        str(body.get("error_message") or body.get("message") or answer.text)


def _preload(server_args: Any) -> None:
    import requests

    plan = config.get().plan
    if not loads_at_runtime(server_args):
        return  # said at start-up by hooks.on_demand
    try:
        plan.check_fits(server_args.max_loras_per_batch)
    except PlanError as error:
        logger.error("lora_telemetry: plan refused: %s; serving without it", error)
        return
    if plan.slots != server_args.max_loras_per_batch:
        logger.warning("lora_telemetry: the plan was made for %d slots and this server has %d: its predictions "
                       "do not apply", plan.slots, server_args.max_loras_per_batch)
    url, headers = _session(server_args)
    _wait_until_up(requests, url, headers)

    def load(name: str, folder: str, pinned: bool) -> str | None:
        preloading.add(name)
        try:
            answer = requests.post(url + "/load_lora_adapter", headers=headers, timeout=SERVER_UP_TIMEOUT_S,
                                   json={"lora_name": name, "lora_path": folder, "pinned": pinned}, verify=False)
        finally:
            preloading.discard(name)
        return _error(answer)

    def unload(name: str) -> str | None:
        return _error(requests.post(url + "/unload_lora_adapter", headers=headers, timeout=SERVER_UP_TIMEOUT_S,
                                    json={"lora_name": name}, verify=False))

    directory = on_demand_directory(server_args)
    preload(plan, lambda name: str(found) if (found := directory.find(name)) else None, _loaded(), load, unload)


@hook("plan_preload", WARMUP, "AROUND", loses="preloading the adapters of LORA_TELEMETRY_PLAN",
      wanted=lambda cfg: cfg.plan is not None and bool(cfg.plan.preload))
def wait_and_warmup(original: Any, *args: Any, **kwargs: Any) -> Any:
    server_args = kwargs.get("server_args", args[0] if args else None)
    safely("plan_preload", _preload, server_args)
    return original(*args, **kwargs)
