"""``LoRAEngine``: ``sglang.Engine`` with the adapter chosen per request by name.

Each sampling-params dict may carry ``"lora_name"`` (absent or None: the base model); one
call can mix adapters and the base model. An adapter that is registered but not loaded is
loaded on its first request, once, however many requests ask for it at the same moment;
SGLang then serves the request. Names are checked before anything is sent to SGLang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from lora_telemetry import plan as plan_module
from lora_telemetry.adapters import AdapterDirectory, AdapterNameError, SingleFlight, check_name
from lora_telemetry.load_context import held, load_trigger
from lora_telemetry.plan import Plan
from lora_telemetry.preload import preload
from lora_telemetry.priorities import check_priorities

PRIORITIES_ENV = "LORA_TELEMETRY_PRIORITIES"
SGLANG_DEFAULT_SLOTS = 8  # --max-loras-per-batch when not given

SamplingParams = dict[str, Any]
# generate() keyword arguments that SGLang takes per prompt when given as a list.
_PER_PROMPT = ("input_ids", "rid", "return_logprob", "logprob_start_len", "top_logprobs_num", "custom_logit_processor")


@contextlib.contextmanager
def _priorities_for_children(priorities: dict[str, int]) -> Iterator[None]:
    """SGLang's scheduler runs in processes of its own, started in here: they read the priorities
    from ``LORA_TELEMETRY_PRIORITIES`` (a file), as servers do."""
    if not priorities:
        yield
        return
    saved = os.environ.get(PRIORITIES_ENV)
    with tempfile.TemporaryDirectory(prefix="lora_telemetry-") as folder:
        path = Path(folder) / "priorities.json"
        path.write_text(json.dumps(priorities))
        os.environ[PRIORITIES_ENV] = str(path)
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(PRIORITIES_ENV, None)
            else:
                os.environ[PRIORITIES_ENV] = saved


class AdapterLoadError(RuntimeError):
    """The adapter could not be loaded (or unloaded); the requests that asked for it fail with this error."""


class WrongEventLoopError(RuntimeError):
    """An async method was awaited on an event loop other than the engine's."""


class LoRAEngine:
    """Wraps ``sglang.Engine(*args, **kwargs)``; adds ``adapters={name: folder}``, ``adapter_dir``,
    ``priorities={name: int}`` (the pool evicts the lowest first; :mod:`lora_telemetry.priorities`)
    and ``plan`` (a file or :class:`~lora_telemetry.plan.Plan`: its adapters are loaded, pinned
    as it says, before the constructor returns; its priorities are set).

    A plan that pins every slot, or priorities that are not integers, raise before SGLang starts.
    """

    def __init__(self, *args: Any, adapters: dict[str, str | Path] | None = None,
                 adapter_dir: str | Path | None = None, priorities: dict[str, int] | None = None,
                 plan: str | Path | Plan | None = None, **kwargs: Any) -> None:
        self._registered = {check_name(name, adapters or {}): str(path) for name, path in (adapters or {}).items()}
        self._directory = AdapterDirectory(adapter_dir) if adapter_dir is not None else None
        self._loads = SingleFlight()
        self.plan = plan_module.read(Path(plan)) if isinstance(plan, (str, Path)) else plan
        if self.plan is not None:
            self.plan.check_fits(kwargs.get("max_loras_per_batch") or SGLANG_DEFAULT_SLOTS)
        self.priorities = check_priorities({**(self.plan.priorities if self.plan else {}), **(priorities or {})})
        import sglang

        with _priorities_for_children(self.priorities):
            self.engine = sglang.Engine(*args, **kwargs)
        if self.plan is not None:
            self.preloaded = preload(self.plan, self._folder, held(self._loaded_names()), self._load_for_plan,
                                     self._unload_for_plan)

    def _load_for_plan(self, name: str, folder: str, pinned: bool) -> str | None:
        async def load() -> Any:
            token = load_trigger.set("preload")
            try:
                return await self.engine.async_load_lora_adapter(name, folder, pinned)
            finally:
                load_trigger.reset(token)

        result = self._run(load())
        return None if result.success else str(result.error_message)

    def _unload_for_plan(self, name: str) -> str | None:
        result = self._run(self.engine.async_unload_lora_adapter(name))
        return None if result.success else str(result.error_message)

    # -- adapters ----------------------------------------------------------------------
    def known_adapters(self) -> list[str]:
        """Registered, in the adapter directory, or loaded in SGLang (e.g. from tensors)."""
        directory = self._directory.names() if self._directory else ()
        return sorted(set(self._registered) | set(directory) | set(self._loaded_names()))

    def _loaded_names(self) -> Any:
        registry = self.engine.tokenizer_manager.lora_registry
        adapters = getattr(registry, "_registry", None)  # get_all_adapters() copies them all, per request
        return adapters if adapters is not None else registry.get_all_adapters()

    def _folder(self, name: str) -> str | None:
        if name in self._registered:
            return self._registered[name]
        found = self._directory.find(name) if self._directory else None
        return str(found) if found else None

    def _resolve(self, name: Any) -> str | None:
        """Validate one ``lora_name``; None is the base model."""
        if name is None:
            return None
        check_name(name, self.known_adapters())
        if self._folder(name) is None and not self._is_loaded(name):
            raise AdapterNameError(name, "unknown adapter", self.known_adapters())
        return name

    def _is_loaded(self, name: str) -> bool:
        return name in self._loaded_names()

    # -- adapters at run time: an RL trainer loads each new version and unloads the old one --
    def load_adapter(self, name: str, path: str | Path, pinned: bool = False) -> None:
        """Load an adapter from a folder now (SGLang's own load); requests then name it by ``lora_name``."""
        self._run(self.async_load_adapter(name, path, pinned))

    async def async_load_adapter(self, name: str, path: str | Path, pinned: bool = False) -> None:
        self._check_loop()
        check_name(name, self.known_adapters())
        result = await self.engine.async_load_lora_adapter(name, str(path), pinned)
        if not result.success:
            raise AdapterLoadError(f"adapter {name!r} could not be loaded from {str(path)!r}: {result.error_message}")

    def load_adapter_from_tensors(self, name: str, tensors: dict[str, Any], config_dict: dict[str, Any],
                                  load_format: str | None = None) -> None:
        """Load an adapter from weights in memory (peft state-dict names, its ``adapter_config``
        as a dict), as RL trainers push each new version; requests then name it by ``lora_name``."""
        self._check_loop()
        check_name(name, self.known_adapters())
        result = self.engine.load_lora_adapter_from_tensors(name, tensors, config_dict, load_format)
        if not result.success:
            raise AdapterLoadError(f"adapter {name!r} could not be loaded from tensors: {result.error_message}")

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter; SGLang waits until the requests that use it are done."""
        self._run(self.async_unload_adapter(name))

    async def async_unload_adapter(self, name: str) -> None:
        self._check_loop()
        check_name(name, self.known_adapters())
        if not self._is_loaded(name):
            raise AdapterNameError(name, "not loaded", sorted(self._loaded_names()))
        result = await self.engine.async_unload_lora_adapter(name)
        if not result.success:
            raise AdapterLoadError(f"adapter {name!r} could not be unloaded: {result.error_message}")

    def _check_loop(self) -> None:
        """SGLang's engine answers on the event loop it was created with; awaited on another, a
        call would wait forever."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return  # a blocking call: it runs on the engine's loop
        if running is not self.engine.loop:
            raise WrongEventLoopError(
                "LoRAEngine's async methods must be awaited on the event loop SGLang's engine was created with "
                "(engine.loop, the loop of the thread that built it), not on another one such as a new "
                "asyncio.run(): there SGLang's answers never arrive. Use engine.loop.run_until_complete(...) "
                "or the blocking methods.")

    def _run(self, work: Any) -> Any:
        return self.engine.loop.run_until_complete(work)

    async def _ensure_loaded(self, name: str) -> None:
        if self._is_loaded(name):
            return

        async def load() -> None:
            if self._is_loaded(name):
                return
            token = load_trigger.set("on_demand")
            try:
                result = await self.engine.async_load_lora_adapter(name, self._folder(name))
            finally:
                load_trigger.reset(token)
            if not result.success and not self._is_loaded(name):  # loaded meanwhile by SGLang's own reload: fine
                raise AdapterLoadError(f"adapter {name!r} could not be loaded: {result.error_message}")

        await self._loads.run(name, load)

    # -- generation --------------------------------------------------------------------
    def _split(self, prompt: Any, sampling_params: Any, kwargs: dict[str, Any]) -> tuple[bool, list[dict]]:
        """One SGLang call per prompt: (single?, [{prompt, sampling_params, lora_path, kwargs}])."""
        source = prompt if prompt is not None else kwargs.get("input_ids")
        single = not (isinstance(source, list) and source and isinstance(source[0], (str, list)))
        prompts = [source] if single else list(source)
        if isinstance(sampling_params, list):
            if len(sampling_params) != len(prompts):
                raise ValueError(f"got {len(sampling_params)} sampling-params dicts for {len(prompts)} prompts; "
                                 "give one dict, or one per prompt")
            params = [dict(p or {}) for p in sampling_params]
        else:
            params = [dict(sampling_params or {}) for _ in prompts]
        names = [self._resolve(p.pop("lora_name", None)) for p in params]  # all checked before sending
        calls = []
        for i, (p, name) in enumerate(zip(params, names, strict=True)):
            call_kwargs = {k: (v[i] if k in _PER_PROMPT and isinstance(v, list) and not single else v)
                           for k, v in kwargs.items()}
            if "priority" in p:
                call_kwargs["priority"] = p.pop("priority")
            if prompt is not None:
                call_kwargs["prompt"] = prompts[i]
            calls.append({"sampling_params": p, "lora_path": name, **call_kwargs})
        return single, calls

    async def _one(self, call: dict[str, Any]) -> Any:
        if call["lora_path"] is not None:
            try:
                await self._ensure_loaded(call["lora_path"])
            except AdapterLoadError as error:
                return error
        return await self.engine.async_generate(**call)

    async def async_generate(self, prompt: Any = None, sampling_params: Any = None, *, stream: bool = False,
                             **kwargs: Any) -> Any:
        """Like ``sglang.Engine.async_generate``; ``lora_name`` in the sampling params picks the adapter.

        For a list of prompts the results come back in prompt order; a prompt whose adapter
        could not be loaded gets its :class:`AdapterLoadError` in its place while the others
        are served. A single prompt whose adapter fails raises it.
        """
        self._check_loop()
        single, calls = self._split(prompt, sampling_params, kwargs)
        if stream:
            if not single:
                raise ValueError("stream=True takes one prompt")
            return self._stream(calls[0])
        results = await asyncio.gather(*(self._one(call) for call in calls))
        if single:
            if isinstance(results[0], AdapterLoadError):
                raise results[0]
            return results[0]
        return list(results)

    async def _stream(self, call: dict[str, Any]) -> AsyncIterator[dict]:
        if call["lora_path"] is not None:
            await self._ensure_loaded(call["lora_path"])
        async for chunk in await self.engine.async_generate(**call, stream=True):
            yield chunk

    def generate(self, prompt: Any = None, sampling_params: Any = None, *, stream: bool = False,
                 **kwargs: Any) -> Any:
        """Blocking form of :meth:`async_generate` (streaming returns an iterator)."""
        loop = self.engine.loop
        if not stream:
            return loop.run_until_complete(self.async_generate(prompt, sampling_params, **kwargs))
        chunks = loop.run_until_complete(self.async_generate(prompt, sampling_params, stream=True, **kwargs))

        def iterate() -> Iterator[dict]:
            while True:
                try:
                    yield loop.run_until_complete(chunks.__anext__())
                except StopAsyncIteration:
                    return

        return iterate()

    def shutdown(self) -> None:
        self.engine.shutdown()

    def __enter__(self) -> LoRAEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()
