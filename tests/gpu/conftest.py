"""The GPU suite: SGLang on a bed of a real model's shape, on CUDA. Skipped (never passed) where CUDA is absent,
so CI, which has no GPU, lists these tests as skipped.

Where the bed comes from and what the host needs:
- ``LORA_TELEMETRY_GPU_BED``: a bed made by ``lora-telemetry testbed make DIR --shape llama3-8b --rank 16``
  (default: made under pytest's temporary directory, 16 GB, a minute on an H100).
- ``LORA_TELEMETRY_GPU_SERVER_FLAGS``: more SGLang flags for the host (the bundle in ``../shared/gpu/`` needs
  ``--attention-backend triton --sampling-backend pytorch``).
- ``LORA_TELEMETRY_GPU_OUT``: a folder for the runs' figures (JSON), which the README's GPU table quotes.
- ``LORA_TELEMETRY_GPU_TESTS=cpu``: run them here on a small shaped bed on the CPU, to check the tests
  themselves before GPU time is spent on them (the figures mean nothing there).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def on_cpu() -> bool:
    return os.environ.get("LORA_TELEMETRY_GPU_TESTS") == "cpu"


# What SGLang needs to serve a shaped bed on the CPU (as the test bed's defaults, in the bed's bfloat16)
CPU_FLAGS = ["--device", "cpu", "--dtype", "bfloat16", "--attention-backend", "torch_native", "--sampling-backend",
             "pytorch", "--disable-cuda-graph", "--lora-backend", "torch_native", "--max-total-tokens", "65536",
             "--skip-server-warmup"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda() or on_cpu():
        return
    skip = pytest.mark.skip(reason="needs CUDA: SGLang on a GPU (see tests/gpu/conftest.py)")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shaped_bed(tmp_path_factory: pytest.TempPathFactory):
    from lora_telemetry.testbed.shapes import make_shaped, shape_named

    given = os.environ.get("LORA_TELEMETRY_GPU_BED")
    root = Path(given) if given else tmp_path_factory.mktemp("shaped")
    small = {"layers": 2, "hidden": 64, "intermediate": 160, "heads": 4, "kv_heads": 2} if on_cpu() else {}
    return make_shaped(root, shape_named("llama3-8b", **small), adapters=16, rank=16)


@pytest.fixture(scope="session")
def host_flags() -> list[str]:
    return [*(CPU_FLAGS if on_cpu() else []), *shlex.split(os.environ.get("LORA_TELEMETRY_GPU_SERVER_FLAGS", ""))]


@pytest.fixture(scope="session")
def figures_out() -> Path | None:
    out = os.environ.get("LORA_TELEMETRY_GPU_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out) if out else None
