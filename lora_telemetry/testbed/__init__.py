"""The CPU test bed: a tiny local model, LoRA adapters, and stock SGLang on a CPU.

This is what the demo, the benchmarks and the tests run on, and what anyone can try on
a laptop without a GPU or a download. It is not needed on a GPU machine: there SGLang
runs as usual and the plugin attaches the same way. The CPU compatibility it brings
(:mod:`lora_telemetry.testbed.cpu_compat`) switches itself on only where CUDA is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lora_telemetry.testbed import cpu_compat
from lora_telemetry.testbed.model import (
    ALL_PROJECTIONS,
    CONTEXT_LENGTH,
    MAX_RANK,
    SERVED_MODEL_NAME,
    TestBed,
    make,
)

__all__ = ["TestBed", "make", "engine_kwargs", "server_flags", "default_root"]


def default_root() -> Path:
    """Where the demo keeps its test bed between runs."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lora_telemetry" / "testbed"


def _cpu_settings(bed: TestBed) -> dict[str, Any]:
    """SGLang settings that run the tiny model with LoRA on a CPU, as keyword arguments."""
    return {
        "model_path": str(bed.model),
        "served_model_name": SERVED_MODEL_NAME,
        "device": "cpu",
        "dtype": "float32",
        "attention_backend": "torch_native",
        "sampling_backend": "pytorch",
        "disable_cuda_graph": True,
        "context_length": CONTEXT_LENGTH,
        "skip_server_warmup": True,
        # SGLang sizes the KV cache from free memory: 15 GB and 30 s of start-up on a 24 GB
        # machine. The tiny model needs a few thousand tokens.
        "max_total_tokens": 65536,
        "enable_lora": True,
        "lora_backend": "torch_native",
        "max_lora_rank": MAX_RANK,
        "lora_target_modules": list(ALL_PROJECTIONS),
        "enable_metrics": True,
    }


def _gpu_settings(bed: TestBed) -> dict[str, Any]:
    return {
        "model_path": str(bed.model),
        "served_model_name": SERVED_MODEL_NAME,
        "context_length": CONTEXT_LENGTH,
        "enable_lora": True,
        "max_lora_rank": MAX_RANK,
        "lora_target_modules": list(ALL_PROJECTIONS),
        "enable_metrics": True,
    }


def _settings(bed: TestBed) -> dict[str, Any]:
    return _gpu_settings(bed) if cpu_compat.cuda_available() else _cpu_settings(bed)


def engine_kwargs(root: str | Path, **overrides: Any) -> dict[str, Any]:
    """Prepare this process for SGLang on this machine and return ``sglang.Engine`` kwargs.

    Call it before ``sglang`` is imported: on a CPU it puts the ``sgl_kernel``
    stand-in on the path of this process and of the processes SGLang spawns.
    """
    os.environ.update(cpu_compat.prepare_environment(dict(os.environ)))
    if cpu_compat.wanted() and cpu_compat.STAND_IN_PATH not in sys.path:
        sys.path.insert(0, cpu_compat.STAND_IN_PATH)
    return {**_settings(TestBed(Path(root))), **overrides}


def server_flags(root: str | Path, extra: list[str] | None = None, warmup: bool = False) -> list[str]:
    """``sglang.launch_server`` flags for the test bed; ``extra`` flags win over defaults. The test
    bed skips SGLang's warm-up request unless ``warmup``."""
    extra = list(extra or [])
    given = {arg.split("=", 1)[0] for arg in extra if arg.startswith("--")}
    flags: list[str] = []
    for key, value in _settings(TestBed(Path(root))).items():
        flag = "--" + key.replace("_", "-")
        if flag in given or (warmup and key == "skip_server_warmup"):
            continue
        if value is True:
            flags.append(flag)
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags + extra
