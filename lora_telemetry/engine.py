"""``LoRAEngine``: ``sglang.Engine`` with the adapter chosen per request by name.

Each sampling-params dict may carry ``"lora_name"`` (absent or None: the base model); one
call can mix adapters and the base model. An adapter that is registered but not loaded is
loaded on its first request, once, however many requests ask for it at the same moment;
SGLang then serves the request. Names are checked before anything is sent to SGLang.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from lora_telemetry.adapters import AdapterDirectory, AdapterNameError, SingleFlight, check_name

SamplingParams = dict[str, Any]
# generate() keyword arguments that SGLang takes per prompt when given as a list.
_PER_PROMPT = ("input_ids", "rid", "return_logprob", "logprob_start_len", "top_logprobs_num", "custom_logit_processor")


class AdapterLoadError(RuntimeError):
    """The adapter could not be loaded; the requests that asked for it fail with this error."""


class LoRAEngine:
    """Wraps ``sglang.Engine(*args, **kwargs)``; adds ``adapters={name: folder}`` and ``adapter_dir``."""

    def __init__(self, *args: Any, adapters: dict[str, str | Path] | None = None,
                 adapter_dir: str | Path | None = None, **kwargs: Any) -> None:
        self._registered = {check_name(name, adapters or {}): str(path) for name, path in (adapters or {}).items()}
        self._directory = AdapterDirectory(adapter_dir) if adapter_dir is not None else None
        self._loads = SingleFlight()
        import sglang

        self.engine = sglang.Engine(*args, **kwargs)

    # -- adapters ----------------------------------------------------------------------
    def known_adapters(self) -> list[str]:
        return sorted(set(self._registered) | set(self._directory.names() if self._directory else ()))

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
        if self._folder(name) is None:
            raise AdapterNameError(name, "unknown adapter", self.known_adapters())
        return name

    def _is_loaded(self, name: str) -> bool:
        registry = self.engine.tokenizer_manager.lora_registry
        adapters = getattr(registry, "_registry", None)  # get_all_adapters() copies them all, per request
        return name in (adapters if adapters is not None else registry.get_all_adapters())

    async def _ensure_loaded(self, name: str) -> None:
        if self._is_loaded(name):
            return

        async def load() -> None:
            if self._is_loaded(name):
                return
            from lora_telemetry.hooks.tokenizer import load_trigger

            token = load_trigger.set("on_demand")
            try:
                result = await self.engine.async_load_lora_adapter(name, self._folder(name))
            finally:
                load_trigger.reset(token)
            if not result.success:
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
