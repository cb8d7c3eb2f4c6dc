"""CPU compatibility for running stock SGLang 0.5.23 with LoRA on a machine without CUDA.

Test bed only, and only where CUDA is absent. Two things stop SGLang's LoRA path on a
CPU: the CPU build of ``sgl_kernel`` is not on the package index (handled by the
stand-in package put on ``PYTHONPATH``, see :data:`STAND_IN_PATH`), and SGLang's LoRA
layers and torch-native backend hard-code ``pin_memory=True``, which needs an NVIDIA
driver. :func:`apply` drops the pinning in those modules. It is registered as its own
entry point (``lora_telemetry_testbed``) so that it still runs in every SGLang process
when the telemetry plugin itself is switched off.
"""

from __future__ import annotations

import functools
import importlib
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAND_IN_PATH = str(Path(__file__).parent / "stand_in")
ENV_FLAG = "LORA_TELEMETRY_TESTBED"

# SGLang modules whose tensor factories pass pin_memory=True.
_PINNING_MODULES = (
    "sglang.srt.lora.layers",
    "sglang.srt.lora.backend.torch_backend",
)
_FACTORIES = ("empty", "zeros", "ones", "tensor", "arange", "full", "as_tensor")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def wanted() -> bool:
    """The test bed asked for it (environment flag) and there is no CUDA."""
    return os.environ.get(ENV_FLAG) == "1" and not cuda_available()


def prepare_environment(env: dict[str, str]) -> dict[str, str]:
    """Environment for SGLang processes on the CPU test bed (children inherit it)."""
    env = dict(env)
    if cuda_available():
        return env
    env[ENV_FLAG] = "1"
    env["SGLANG_USE_CPU_ENGINE"] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if STAND_IN_PATH not in paths:
        env["PYTHONPATH"] = os.pathsep.join([STAND_IN_PATH, *paths])
    return env


def _without_pinning(factory: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(factory)
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("pin_memory", None)
        return factory(*args, **kwargs)

    return call


def _unpinned_torch() -> types.ModuleType:
    """A view of ``torch`` whose tensor factories ignore ``pin_memory``."""
    import torch

    view = types.ModuleType("torch")
    view.__getattr__ = lambda name: getattr(torch, name)  # type: ignore[attr-defined]
    for name in _FACTORIES:
        setattr(view, name, _without_pinning(getattr(torch, name)))
    return view


def _without_pynccl() -> None:
    """Tensor parallelism: SGLang asks for an NCCL communicator in every model-parallel group
    unless told otherwise; on a CPU its groups fall back to gloo, which is all they need."""
    from sglang.srt.distributed import parallel_state

    original = parallel_state.init_model_parallel_group

    @functools.wraps(original)
    def init_model_parallel_group(*args: Any, **kwargs: Any) -> Any:
        kwargs["use_pynccl"] = False
        return original(*args, **kwargs)

    parallel_state.init_model_parallel_group = init_model_parallel_group


def apply() -> None:
    """Entry point ``lora_telemetry_testbed``: a no-op unless the test bed is wanted."""
    if not wanted():
        return
    import torch

    _without_pynccl()

    torch.Tensor.pin_memory = lambda self, *a, **k: self  # type: ignore[method-assign]
    view = _unpinned_torch()
    for name in _PINNING_MODULES:
        importlib.import_module(name).torch = view
